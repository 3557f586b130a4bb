/* lhost.h - one sandboxed Lua state running handler scripts. */
#ifndef LHOST_H
#define LHOST_H

#include <stddef.h>

#include "lalloc.h"
#include "lb_ctx.h"

struct lua_State;

enum {
	LHOST_OK = 0,
	LHOST_ERROR = -1,		/* the handler raised */
	LHOST_TIMEOUT = -2,		/* it ran past its budget */
	LHOST_NOMEM = -3,		/* it ran past its memory cap */
	LHOST_YIELD = 1			/* it waits (lhost_start) */
};

/* One event being handled: its coroutine and what its bindings see. */
struct lhost_task {
	struct lb_ctx	 ctx;
	int		 ref;		/* registry: the coroutine */
};

struct lhost {
	struct lua_State *L;
	struct lalloc	 mem;		/* its allocator: used, limit (0: none) */
	int		 host;		/* ref: the table walua/host.lua returned */
	struct lb_ctx	 ctx;		/* what the bindings see of a call */
};

struct lhost	*lhost_new(size_t mem_limit, char *err, size_t errlen);
void		 lhost_free(struct lhost *);
int		 lhost_load(struct lhost *, const char *path, const char *src,
		    size_t len, int timeout_ms, char *err, size_t errlen);
int		 lhost_start(struct lhost *, struct lhost_task *,
		    const char *json, size_t len, int attempt, int stale,
		    int timeout_ms, char *err, size_t errlen);
int		 lhost_resume(struct lhost *, struct lhost_task *, char *err,
		    size_t errlen);
void		 lhost_end(struct lhost *, struct lhost_task *);
void		 lhost_collect(struct lhost *);
int		 lhost_call(struct lhost *, int nargs, int nresults,
		    int timeout_ms);
int		 lhost_set_settings(struct lhost *, const char *json,
		    size_t len);

#endif
