/* worker.h - a handler worker process (started as `walua __worker`). */
#ifndef WORKER_H
#define WORKER_H

#define WORKER_FD	3	/* the socketpair end a worker is given */

int	worker_main(void);

#endif
