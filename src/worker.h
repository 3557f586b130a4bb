/* worker.h - a handler worker process (started as `walua __worker`). */
#ifndef WORKER_H
#define WORKER_H

#include <stddef.h>

#define WORKER_FD	3	/* the socketpair end a worker is given */
#define WORKER_SHM_FD	4	/* its page shared with the supervisor */
#define WORKER_PACE_FD	5	/* the pace of sends, shared by all (pace.c) */

/*
 * Written by the worker, read by the supervisor without a system call:
 * which event's Lua runs now (slot + 1; 0: none) and since when
 * (CLOCK_MONOTONIC ms), so that a worker stuck where no hook reaches is
 * blamed on that event alone; how long its slices of Lua usually take
 * (about the last eight), so that a worker whose Lua runs far longer is
 * given no more events while another worker can take them (pool.c); and
 * its outbound transfers in flight, for /metrics.
 */
struct worker_shm {
	_Atomic int	 running;
	_Atomic int	 outbound;
	_Atomic long long running_since;
	_Atomic int	 slice_us;	/* a slice of Lua's usual length */
};

struct config;
struct lhost;

int		 worker_main(void);
struct lhost	*worker_state(const struct config *, char *err, size_t errlen);

#endif
