/* worker.h - a handler worker process (started as `walua __worker`). */
#ifndef WORKER_H
#define WORKER_H

#include <stddef.h>

#define WORKER_FD	3	/* the socketpair end a worker is given */

struct config;
struct lhost;

int		 worker_main(void);
struct lhost	*worker_state(const struct config *, char *err, size_t errlen);

#endif
