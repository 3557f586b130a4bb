/* pool.h - the supervisor: worker processes, generations, reload, stop. */
#ifndef POOL_H
#define POOL_H

struct config;

int	pool_start(const char *file, struct config *cfg);
int	pool_run(void (*stop_http)(void));
void	pool_free(void);
int	pool_generation(void);
int	pool_workers(void);

#endif
