/*
 * lhost.c - one sandboxed Lua state for handler scripts (in a worker
 * process; one state per process, so never shared between threads).
 *
 * The state's allocator counts its bytes and refuses to grow past the cap
 * (HAProxy's hlua_alloc, per Lua's allocator contract); a count hook
 * checks a monotonic deadline and, once past it, re-arms itself to raise
 * on every line and count tick so a script's pcall cannot swallow the
 * timeout (Redis).  What no hook can interrupt (a long string.find, an
 * xpcall message handler, a __gc loop) is left to the supervisor, which
 * kills the whole worker process.
 *
 * The sandbox itself is built by lua/walua/host.lua, run protected at
 * creation with the C helpers below; every call into Lua goes through
 * lhost_call.
 */
#include "lhost.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "lb.h"
#include "lb_ctx.h"
#include "log.h"
#include "luasrc.h"

/*
 * Instructions between deadline checks.  Measured on the dev machine: a
 * tight Lua loop runs ~10^8 instructions/s, so 10000 is a check every
 * ~0.1 ms, and the clock_gettime it costs is lost in the noise.
 */
#define LHOST_HOOK_COUNT	10000

/*
 * How long one event's Lua runs before the hook yields it so that the
 * worker's other events get their turn (a handler that computes for a
 * second must not make those waiting on the network miss their answers
 * and budgets).  A slice is checked at the hook, so it is this plus up
 * to one count of instructions.
 */
#define LHOST_SLICE_NS		(10 * 1000000LL)

/*
 * The count hook of the thread L: its context (the state's own for a
 * script's top level, the event's for a handler's coroutine and the
 * coroutines it makes) holds the deadline.
 */
static void
lhost_hook(lua_State *L, lua_Debug *ar)
{
	struct lb_ctx	*ctx = lb_ctx_of(L);
	int64_t		 now;

	(void)ar;
	if (ctx == NULL || ctx->deadline_ns == 0)
		return;
	if (!ctx->tripped) {
		now = lb_ctx_now_ns();
		if (now < ctx->deadline_ns) {
			/*
			 * Long enough on the CPU: let the worker's loop serve
			 * the other events (their answers, their timers) and
			 * resume this one after them.  Only the event's own
			 * coroutine yields so, where Lua can yield.
			 */
			if (ctx->slice_end_ns != 0 && now >= ctx->slice_end_ns &&
			    ctx->co == L && lua_isyieldable(L)) {
				ctx->preempted = 1;
				lua_yield(L, 0);
			}
			return;
		}
		ctx->tripped = 1;
	}
	/* from now on, raise at every line and every instruction */
	lua_sethook(L, lhost_hook, LUA_MASKCOUNT | LUA_MASKLINE, 1);
	luaL_error(L, "handler timed out");
}

static int
msghandler(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);

	if (msg == NULL) {
		if (luaL_callmeta(L, 1, "__tostring") &&
		    lua_type(L, -1) == LUA_TSTRING)
			msg = lua_tostring(L, -1);
		else
			msg = lua_pushfstring(L, "(error object is a %s value)",
			    luaL_typename(L, 1));
	}
	luaL_traceback(L, L, msg, 1);
	return 1;
}

/*
 * Call the function under nargs arguments at the top of the stack under a
 * traceback handler, with the deadline armed (timeout_ms > 0).  Returns
 * LUA_OK or an error code; on error the message (with traceback) is left
 * on the stack.  [-(nargs+1), +(nresults|1), -]
 */
int
lhost_call(struct lhost *h, int nargs, int nresults, int timeout_ms)
{
	lua_State	*L = h->L;
	int		 base = lua_gettop(L) - nargs, rc;

	lua_pushcfunction(L, msghandler);
	lua_insert(L, base);
	h->ctx.tripped = 0;
	if (timeout_ms > 0) {
		/* the deadline must be set before the hook can see it */
		h->ctx.deadline_ns = lb_ctx_now_ns() +
		    (int64_t)timeout_ms * 1000000;
		lua_sethook(L, lhost_hook, LUA_MASKCOUNT, LHOST_HOOK_COUNT);
	}
	rc = lua_pcall(L, nargs, nresults, base);
	lua_sethook(L, NULL, 0, 0);
	h->ctx.deadline_ns = 0;
	lua_remove(L, base);
	return rc;
}

/* C.readsrc(path) -> text | nil: embedded for relative paths, else disk. */
static int
l_readsrc(lua_State *L)
{
	const char		*path = luaL_checkstring(L, 1);
	const struct luasrc	*f;
	luaL_Buffer		 b;
	FILE			*fp;
	size_t			 n;

	if (path[0] != '/') {
		if ((f = luasrc_find(path)) == NULL)
			return 0;
		lua_pushlstring(L, f->data, f->len);
		return 1;
	}
	if ((fp = fopen(path, "rb")) == NULL)
		return 0;
	luaL_buffinit(L, &b);
	do {
		char *p = luaL_prepbuffer(&b);
		n = fread(p, 1, LUAL_BUFFERSIZE, fp);
		luaL_addsize(&b, n);
	} while (n == LUAL_BUFFERSIZE);
	fclose(fp);		/* nothing below raises with fp open */
	luaL_pushresult(&b);
	return 1;
}

/* Build the sandbox (run protected: OOM here fails lhost_new). */
static int
init_protected(lua_State *L)
{
	luaL_openlibs(L);
	if (luasrc_load(L, "walua.host") != LUA_OK)
		return lua_error(L);
	lua_newtable(L);				/* C helpers */
	lb_json_open_cjson(L);				/* (sp += 1) */
	lua_pushvalue(L, -1);
	lua_setfield(L, -3, "cjson");
	lua_pushcclosure(L, lb_log_write, 1);		/* upvalue: cjson */
	luaopen_walua_log(L);
	lua_setfield(L, -3, "logmod");
	lua_setfield(L, -2, "log");
	lua_pushcfunction(L, l_readsrc);
	lua_setfield(L, -2, "readsrc");
	lua_pushcfunction(L, lb_json_decode_event);
	lua_setfield(L, -2, "decode");
	luaopen_walua_store(L);
	lua_setfield(L, -2, "store");
	luaopen_walua_httpc(L);
	lua_setfield(L, -2, "httpc");
	luaopen_walua_crypto(L);
	lua_setfield(L, -2, "crypto");
	luaopen_walua_outbound(L);
	lua_setfield(L, -2, "outbound");
	lua_call(L, 1, 1);				/* host table */
	return 1;
}

static int
at_panic(lua_State *L)
{
	log_msg(LOG_ERROR, "lua panic: %s", lua_tostring(L, -1));
	abort();	/* the supervisor sees the worker die and respawns it */
}

/*
 * A new sandboxed state whose allocations stay under mem_limit bytes (0:
 * none).  On failure returns NULL with the reason in err.
 */
struct lhost *
lhost_new(size_t mem_limit, char *err, size_t errlen)
{
	struct lhost	*h;

	if ((h = calloc(1, sizeof(*h))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	h->mem.limit = mem_limit;
	if ((h->L = lua_newstate(lalloc, &h->mem)) == NULL) {
		free(h);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	lb_ctx_set(h->L, &h->ctx);
	lua_atpanic(h->L, at_panic);
	/*
	 * An event's tables and its coroutine are garbage once it is
	 * handled, while the scripts and their state live on: what the
	 * generational collector is made for (measured: about 15% less of
	 * the worker's CPU per event than the incremental one).
	 */
	lua_gc(h->L, LUA_GCGEN, 0, 0);
	lua_pushcfunction(h->L, init_protected);
	if (lhost_call(h, 0, 1, 0) != LUA_OK) {
		snprintf(err, errlen, "sandbox: %s", lua_tostring(h->L, -1));
		lhost_free(h);
		return NULL;
	}
	h->host = luaL_ref(h->L, LUA_REGISTRYINDEX);
	return h;
}

void
lhost_free(struct lhost *h)
{
	if (h == NULL)
		return;
	lua_close(h->L);
	lalloc_drain(&h->mem);
	free(h);
}

/* Copy the message at the top into err, pop it, map rc to LHOST_*. */
static int
failure(struct lhost *h, int rc, int tripped, char *err, size_t errlen)
{
	const char *m = lua_tostring(h->L, -1);

	snprintf(err, errlen, "%s", m ? m : "unknown error");
	lua_pop(h->L, 1);
	if (tripped)
		return LHOST_TIMEOUT;
	if (rc == LUA_ERRMEM)
		return LHOST_NOMEM;
	return LHOST_ERROR;
}

/* Give walua.settings the configuration (its checked JSON text). */
int
lhost_set_settings(struct lhost *h, const char *json, size_t len)
{
	lua_State *L = h->L;

	lua_rawgeti(L, LUA_REGISTRYINDEX, h->host);
	lua_getfield(L, -1, "set_settings");
	lua_remove(L, -2);
	lua_pushlstring(L, json, len);
	return lhost_call(h, 1, 0, 1000) == LUA_OK ? 0 : (lua_pop(L, 1), -1);
}

/*
 * Compile and run the handler script at path (text src); it must return a
 * function or a table.  Its top level has a budget too, the handler's
 * (timeout_ms): a script that loops while it loads fails to load.
 */
int
lhost_load(struct lhost *h, const char *path, const char *src, size_t len,
    int timeout_ms, char *err, size_t errlen)
{
	lua_State	*L = h->L;
	char		*tb;
	int		 rc;

	lua_rawgeti(L, LUA_REGISTRYINDEX, h->host);
	lua_getfield(L, -1, "load");
	lua_remove(L, -2);
	lua_pushstring(L, path);
	lua_pushlstring(L, src, len);
	if ((rc = lhost_call(h, 2, 0, timeout_ms)) != LUA_OK) {
		rc = failure(h, rc, h->ctx.tripped, err, errlen);
		/* a load error names file:line; the host's frames say nothing */
		if ((tb = strstr(err, "\nstack traceback:")) != NULL)
			*tb = '\0';
		return rc;
	}
	return LHOST_OK;
}

struct start_args {
	struct lhost		*h;
	struct lhost_task	*t;
	const char		*json;
	size_t			 len;
	int			 attempt, stale;
};

/* The event's coroutine, with host.handle and its arguments.  [-0,+0,m] */
static int
start_protected(lua_State *L)
{
	struct start_args	*a = lua_touserdata(L, 1);
	lua_State		*co = lua_newthread(L);

	lb_ctx_set(co, &a->t->ctx);
	lua_rawgeti(L, LUA_REGISTRYINDEX, a->h->host);
	lua_getfield(L, -1, "handle");
	lua_remove(L, -2);
	lua_pushlstring(L, a->json, a->len);
	lua_pushstring(L, a->t->ctx.ev_id);
	lua_pushinteger(L, a->attempt);
	lua_pushboolean(L, a->stale);
	lua_xmove(L, co, 5);	/* a new thread has room for these */
	a->t->ctx.co = co;
	a->t->ref = luaL_ref(L, LUA_REGISTRYINDEX);	/* the thread */
	return 0;
}

/* Its message and traceback, from the failed coroutine.  [-0, +1, m] */
static int
describe_protected(lua_State *L)
{
	lua_State	*co = lua_touserdata(L, 1);
	const char	*msg = lua_tostring(L, 2);

	if (msg == NULL) {
		if (luaL_callmeta(L, 2, "__tostring") &&
		    lua_type(L, -1) == LUA_TSTRING)
			msg = lua_tostring(L, -1);
		else
			msg = lua_pushfstring(L, "(error object is a %s value)",
			    luaL_typename(L, 2));
	}
	luaL_traceback(L, co, msg, 0);
	return 1;
}

/* Run t's coroutine with nargs on its stack until it yields or ends. */
static int
run(struct lhost *h, struct lhost_task *t, int nargs, char *err,
    size_t errlen)
{
	lua_State	*L = h->L, *co = t->ctx.co;
	int		 rc, nres;

	t->ctx.preempted = 0;
	if (t->ctx.async != NULL)
		t->ctx.slice_end_ns = lb_ctx_now_ns() + LHOST_SLICE_NS;
	rc = lua_resume(co, L, nargs, &nres);
	if (rc == LUA_YIELD || rc == LUA_OK) {
		lua_pop(co, nres);
		return rc == LUA_OK ? LHOST_OK : LHOST_YIELD;
	}
	/* the error object is on co's stack, which keeps its frames */
	lua_pushcfunction(L, describe_protected);
	lua_pushlightuserdata(L, co);
	lua_xmove(co, L, 1);
	if (lua_pcall(L, 2, 1, 0) != LUA_OK && rc != LUA_ERRMEM)
		rc = LUA_ERRMEM;	/* no memory to say more */
	return failure(h, rc, t->ctx.tripped, err, errlen);
}

/*
 * Start handing one event (its JSON text) to every handler, in a
 * coroutine of its own whose deadline is timeout_ms from now; t->ctx
 * names the event (ev_id, ev_conv, ev_msgid) and its host services
 * (async).  Returns LHOST_OK when the handlers returned, LHOST_YIELD when
 * they wait (t->ctx.async will have been asked for something, and
 * lhost_resume goes on once it is there), or a failure with the message
 * and traceback in err.  Either way, lhost_end(t) follows.
 */
int
lhost_start(struct lhost *h, struct lhost_task *t, const char *json,
    size_t len, int attempt, int stale, int timeout_ms, char *err,
    size_t errlen)
{
	struct start_args	 a = { h, t, json, len, attempt, stale };
	lua_State		*L = h->L;
	int			 rc;

	t->ref = LUA_NOREF;
	t->ctx.co = NULL;
	t->ctx.tripped = 0;
	t->ctx.deadline_ns = lb_ctx_now_ns() + (int64_t)timeout_ms * 1000000;
	lua_pushcfunction(L, start_protected);
	lua_pushlightuserdata(L, &a);
	if ((rc = lua_pcall(L, 1, 0, 0)) != LUA_OK)
		return failure(h, rc, 0, err, errlen);
	lua_sethook(t->ctx.co, lhost_hook, LUA_MASKCOUNT, LHOST_HOOK_COUNT);
	return run(h, t, 4, err, errlen);
}

/* Go on with t after what it waited for is there (see lhost_start). */
int
lhost_resume(struct lhost *h, struct lhost_task *t, char *err,
    size_t errlen)
{
	return run(h, t, 0, err, errlen);
}

/*
 * Drop t's coroutine, finished or not (a waiting one is reset: its
 * to-be-closed variables are closed); what it still waited for must be
 * cancelled first, since its stack goes.
 */
void
lhost_end(struct lhost *h, struct lhost_task *t)
{
	static unsigned calls;

	if (t->ctx.co != NULL && lua_status(t->ctx.co) == LUA_YIELD)
		(void)lua_resetthread(t->ctx.co);
	luaL_unref(h->L, LUA_REGISTRYINDEX, t->ref);
	t->ref = LUA_NOREF;
	t->ctx.co = NULL;
	/* keep garbage from piling up between events (Redis paces it too) */
	if (++calls % 64 == 0)
		lua_gc(h->L, LUA_GCSTEP, 0);
}

/* Collect everything now: after a failure that ran out of memory. */
void
lhost_collect(struct lhost *h)
{
	lua_gc(h->L, LUA_GCCOLLECT);
}
