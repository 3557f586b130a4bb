/* pool.h - the supervisor: worker processes, generations, reload, stop. */
#ifndef POOL_H
#define POOL_H

#include <stdint.h>

struct config;

int	pool_start(const char *file, struct config *cfg);
int	pool_run(void (*stop_http)(void));
void	pool_free(void);
int	pool_generation(void);
int	pool_workers(void);

/* The last reload (SIGHUP): when, whether it took, and why not. */
struct reload_info {
	int64_t	 ms;			/* wall clock; 0: none since start */
	int	 ok;
	char	 error[512];
};
void	pool_last_reload(struct reload_info *);

#endif
