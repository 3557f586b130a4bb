/* run.h - `walua run`: admin scripts. */
#ifndef RUN_H
#define RUN_H

int	run_main(int argc, char **argv);

#endif
