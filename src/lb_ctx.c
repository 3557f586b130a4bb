/*
 * lb_ctx.c - where a Lua state keeps its handler context (lb_ctx.h): a
 * pointer in the state's extra space, which coroutines inherit; and the
 * clock handler deadlines are measured on.
 */
#include "lb_ctx.h"

#include <time.h>

#include <lua.h>

/* The context L points at, or NULL.  [-0, +0, -] */
struct lb_ctx *
lb_ctx_of(lua_State *L)
{
	return *(struct lb_ctx **)lua_getextraspace(L);
}

/* Point L at ctx (borrowed: it must outlive the state), or at none. */
void
lb_ctx_set(lua_State *L, struct lb_ctx *ctx)
{
	*(struct lb_ctx **)lua_getextraspace(L) = ctx;
}

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t
lb_ctx_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * The context through which the binding running in L may yield, or NULL
 * when it must block: outside a handler, at a script's top level, in a
 * coroutine of the handler's own (its resume would get our yield), or
 * where Lua cannot yield (a C function's callback, such as a
 * table.sort comparator).  [-0, +0, -]
 */
struct lb_ctx *
lb_ctx_async(lua_State *L)
{
	struct lb_ctx *ctx = lb_ctx_of(L);

	if (ctx == NULL || ctx->async == NULL || ctx->co != L ||
	    !lua_isyieldable(L))
		return NULL;
	return ctx;
}
