/*
 * lb_http.c - walua.httpc, the C core of walua.http (lua/walua/http.lua
 * adds json, get and post): outbound HTTP for handlers and admin scripts,
 * over client.c.
 *
 *   httpc.request{ method, url, headers, body, timeout_ms, api, max_bytes }
 *     -> { status, headers, body } | nil, err
 *   httpc.error(status, code, message) -> nil, err   (for Lua bindings)
 *
 *   httpc.sleep(ms) -> true | false     (false: the budget would not last)
 *   httpc.wait(ms)                      (walua.sleep)
 *
 * Any answer from the server is a result, whatever its status; err is
 * for no answer (connection, timeout, bad URL, too large).  In a handler
 * the timeout never outlasts what is left of the handler's budget.
 *
 * Called from a handler's event coroutine, a request or a pause yields:
 * the worker's loop runs the transfer (fetch.c) beside those of other
 * events and resumes the coroutine with its outcome, which a
 * continuation function turns into the same results as a blocking call.
 * Anywhere else (admin scripts, a script's top level, a coroutine of the
 * handler's own) it blocks, as lb_ctx_async decides.
 */
#include "lb.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "lb_ctx.h"

#define HTTP_DEFAULT_TIMEOUT_MS	10000
#define HTTP_MAX_RESPONSE	(8u << 20)
#define HTTP_MAX_HEADERS	64

static void	(*metric_hook)(const char *, const char *, double);

/*
 * Where walua_outbound_requests_total and walua_outbound_duration_seconds
 * go (a worker sends them to the supervisor, which keeps /metrics).
 */
void
lb_http_set_metric_hook(void (*fn)(const char *family, const char *labels,
    double value))
{
	metric_hook = fn;
}

/* Count or observe a sample where the hook sends it (none: dropped). */
void
lb_http_metric(const char *family, const char *labels, double value)
{
	if (metric_hook != NULL)
		metric_hook(family, labels, value);
}

/* What is left of the handler's budget, in ms; -1 outside a handler. */
static long
remaining_ms(lua_State *L)
{
	struct lb_ctx	*ctx = lb_ctx_of(L);

	if (ctx == NULL || ctx->deadline_ns == 0)
		return -1;
	return (long)((ctx->deadline_ns - lb_ctx_now_ns()) / 1000000);
}

/* The timeout a call may use: asked (or default), within the budget. */
static long
budget_ms(lua_State *L, lua_Integer asked)
{
	long	ms = asked > 0 ? (long)asked : HTTP_DEFAULT_TIMEOUT_MS;
	long	left = remaining_ms(L);

	return left >= 0 && left < ms ? left : ms;
}

/* Push the response headers as a table of lower-case names. */
static void
push_headers(lua_State *L, const struct buf *raw)
{
	const char	*p = raw->data, *end = p + raw->len, *eol, *colon;
	char		 name[128];
	size_t		 n, i;

	lua_newtable(L);
	if (p == NULL)
		return;
	for (; p < end; p = eol + 1) {
		if ((eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
			eol = end;
		colon = memchr(p, ':', (size_t)(eol - p));
		if (colon == NULL || (size_t)(colon - p) >= sizeof(name))
			continue;
		n = (size_t)(colon - p);
		for (i = 0; i < n; i++)
			name[i] = (char)tolower((unsigned char)p[i]);
		name[n] = '\0';
		for (colon++; colon < eol && (*colon == ' ' || *colon == '\t');
		    colon++)
			;
		n = (size_t)(eol - colon);
		while (n > 0 && (colon[n - 1] == '\r' || colon[n - 1] == ' '))
			n--;
		lua_pushlstring(L, colon, n);
		lua_setfield(L, -2, name);
	}
}

/* An HTTP method is a token: it goes into the request line as it is. */
static int
valid_method(const char *s, size_t len)
{
	size_t	i;

	for (i = 0; i < len; i++)
		if (!isalpha((unsigned char)s[i]))
			return 0;
	return len > 0 && len <= 16;
}

static int
valid_label(const char *s)
{
	size_t	i;

	for (i = 0; s[i] != '\0'; i++)
		if (!islower((unsigned char)s[i]) && s[i] != '_' &&
		    !isdigit((unsigned char)s[i]))
			return 0;
	return i > 0 && i <= 24;
}

/* Stack slots of lb_http_request (its one argument is slot 1). */
enum { S_OPTS = 1, S_BODY, S_HEADERS, S_URL, S_METHOD, S_API, S_TOP = S_API };

/*
 * The outcome of a request as its results: count it, then push the
 * answer table, or nil, err.  The answer's buffers are the userdata in
 * S_BODY and S_HEADERS.  [-0, +1|2, m]
 */
static int
push_outcome(lua_State *L, int rc, int status, double seconds,
    const char *err)
{
	struct buf	*body = lua_touserdata(L, S_BODY);
	struct buf	*headers = lua_touserdata(L, S_HEADERS);
	const char	*api = lua_isnil(L, S_API) ? "http" :
			    lua_tostring(L, S_API);
	char		 labels[96];

	snprintf(labels, sizeof(labels), "api=\"%s\",code=\"%d\"", api,
	    rc == 0 ? status : 0);
	if (metric_hook != NULL) {
		metric_hook("walua_outbound_requests_total", labels, 1);
		metric_hook("walua_outbound_duration_seconds", NULL, seconds);
	}
	if (rc == -1) {
		lua_settop(L, S_TOP);
		return lb_push_error(L, -1, NULL, err);
	}
	lua_settop(L, S_TOP);
	lua_createtable(L, 0, 4);
	lua_pushinteger(L, status);
	lua_setfield(L, -2, "status");
	lua_pushlstring(L, body->data ? body->data : "", body->len);
	lua_setfield(L, -2, "body");
	push_headers(L, headers);
	lua_setfield(L, -2, "headers");
	buf_free(body);
	buf_free(headers);
	return 1;
}

/* Where a yielded request resumes: its transfer is over.  [-0, +1|2, m] */
static int
finish_request(lua_State *L, int status, lua_KContext k)
{
	struct lb_ctx	*ctx = lb_ctx_of(L);
	char		 err[512];
	double		 secs = 0;
	int		 code = 0, rc;

	(void)status;
	rc = ctx->async->fetch_end(ctx, (void *)k, &code, &secs, err,
	    sizeof(err));
	return push_outcome(L, rc, code, secs, err);
}

/*
 * httpc.request(opts).  Everything that can raise (argument checks,
 * building strings) happens before the request starts, while nothing is
 * allocated outside Lua; the strings curl is given stay on this
 * function's stack, which a yield keeps.  [-0, +1|2, e]
 */
static int
lb_http_request(lua_State *L)
{
	const char		*hdrs[HTTP_MAX_HEADERS + 1];
	struct client_req	 req;
	struct client_resp	 resp;
	struct lb_ctx		*ctx;
	struct buf		*body, *headers;
	char			 err[512];
	const char		*api, *method, *url;
	size_t			 bodylen = 0, len;
	int64_t			 t0;
	void			*f;
	int			 n = 0, rc;

	luaL_checktype(L, S_OPTS, LUA_TTABLE);
	lua_settop(L, S_OPTS);
	/* the answer's buffers belong to Lua from the start: pushing the
	 * result may raise (out of memory) after curl filled them */
	body = lb_newbuf(L);				/* S_BODY */
	headers = lb_newbuf(L);				/* S_HEADERS */
	lua_getfield(L, S_OPTS, "url");			/* S_URL */
	url = luaL_checkstring(L, S_URL);
	lua_getfield(L, S_OPTS, "method");		/* S_METHOD */
	method = luaL_optlstring(L, S_METHOD, "GET", &len);
	luaL_argcheck(L, valid_method(method, len), S_OPTS, "method must be "
	    "an HTTP token (letters, such as GET or PATCH)");
	lua_getfield(L, S_OPTS, "api");			/* S_API */
	if (!lua_isnil(L, S_API)) {
		api = luaL_checkstring(L, S_API);
		luaL_argcheck(L, valid_label(api), S_OPTS, "api must be a "
		    "short lower-case name");
	}
	memset(&req, 0, sizeof(req));
	req.method = method;
	req.url = url;
	req.max_response = HTTP_MAX_RESPONSE;
	lua_getfield(L, S_OPTS, "max_bytes");
	if (!lua_isnil(L, -1)) {
		lua_Integer m = luaL_checkinteger(L, -1);

		luaL_argcheck(L, m > 0 && m <= (1 << 30), S_OPTS,
		    "max_bytes must be 1..1073741824");
		req.max_response = (size_t)m;
	}
	lua_getfield(L, S_OPTS, "timeout_ms");
	req.timeout_ms = budget_ms(L, luaL_optinteger(L, -1, 0));
	if (req.timeout_ms <= 0) {
		lua_settop(L, S_TOP);
		return lb_push_error(L, -1, NULL, "the handler's time budget is "
		    "used up");
	}
	lua_getfield(L, S_OPTS, "body");
	if (!lua_isnil(L, -1))
		req.body = luaL_checklstring(L, -1, &bodylen);
	req.bodylen = bodylen;
	lua_getfield(L, S_OPTS, "headers");
	if (!lua_isnil(L, -1)) {
		int t = lua_gettop(L);

		luaL_checktype(L, t, LUA_TTABLE);
		lua_pushnil(L);
		while (lua_next(L, t) != 0) {
			const char *k = luaL_checkstring(L, -2);
			const char *v = luaL_checkstring(L, -1);

			/* each "Name: value" stays on the stack: room for it,
			 * the key, the value and the next pair */
			luaL_checkstack(L, 4, "too many headers");
			luaL_argcheck(L, strpbrk(k, "\r\n:") == NULL &&
			    strpbrk(v, "\r\n") == NULL, S_OPTS,
			    "header names and values must be one line");
			luaL_argcheck(L, n < HTTP_MAX_HEADERS, S_OPTS,
			    "too many headers");
			lua_pushfstring(L, "%s: %s", k, v);
			lua_insert(L, t);
			t++;
			hdrs[n++] = lua_tostring(L, t - 1);
			lua_pop(L, 1);
		}
	}
	hdrs[n] = NULL;
	req.headers = hdrs;

	if ((ctx = lb_ctx_async(L)) != NULL) {
		if ((f = ctx->async->fetch(ctx, &req, body, headers, err,
		    sizeof(err))) == NULL)
			return push_outcome(L, -1, 0, 0, err);
		return lua_yieldk(L, 0, (lua_KContext)f, finish_request);
	}
	memset(&resp, 0, sizeof(resp));
	t0 = lb_ctx_now_ns();
	rc = client_request(&req, &resp, err, sizeof(err));
	*body = resp.body;
	*headers = resp.headers;
	return push_outcome(L, rc, resp.status,
	    (double)(lb_ctx_now_ns() - t0) / 1e9, err);
}

/* http.error(status, code, message) -> nil, err: for Lua bindings. */
static int
lb_http_error(lua_State *L)
{
	lua_Integer	 status = luaL_optinteger(L, 1, -1);
	int		 t = lua_type(L, 2);
	const char	*msg = luaL_checkstring(L, 3);

	/* a provider's code keeps its type: Meta's 131047 is a number a
	 * handler compares with ==, Insider's may be a string */
	luaL_argexpected(L, t == LUA_TNONE || t == LUA_TNIL ||
	    t == LUA_TNUMBER || t == LUA_TSTRING, 2, "number or string");
	lb_push_error(L, (int)status, NULL, msg);
	if (t == LUA_TNUMBER || t == LUA_TSTRING) {
		lua_pushvalue(L, 2);
		lua_setfield(L, -2, "code");
	}
	return 2;
}

static int
finish_sleep(lua_State *L, int status, lua_KContext k)
{
	(void)status;
	(void)k;
	lua_pushboolean(L, 1);
	return 1;
}

/* Pause ms: yield the event's coroutine, or block.  [-0, +1, -] */
static int
pause_ms(lua_State *L, lua_Integer ms)
{
	struct lb_ctx	*ctx = lb_ctx_async(L);
	struct timespec	 ts;

	if (ctx != NULL && ctx->async->sleep(ctx, (int64_t)ms) == 0)
		return lua_yieldk(L, 0, 0, finish_sleep);
	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)(ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) == -1)
		;
	lua_pushboolean(L, 1);
	return 1;
}

/*
 * httpc.sleep(ms) -> true, or false when the handler's budget would not
 * last (nothing slept then).  For backing off on a 429.
 */
static int
lb_http_sleep(lua_State *L)
{
	lua_Integer	 ms = luaL_checkinteger(L, 1);
	long		 left;

	luaL_argcheck(L, ms >= 0 && ms <= 600000, 1, "0..600000 ms");
	left = remaining_ms(L);
	if (left >= 0 && left < ms + 500) {	/* leave time to make the call */
		lua_pushboolean(L, 0);
		return 1;
	}
	return pause_ms(L, ms);
}

/*
 * walua.sleep(ms): pause that long (a handler's budget still runs: past
 * it, the event fails as a timeout).  [-0, +1, -]
 */
static int
lb_http_wait(lua_State *L)
{
	lua_Integer ms = luaL_checkinteger(L, 1);

	luaL_argcheck(L, ms >= 0 && ms <= 3600000, 1, "0..3600000 ms");
	return pause_ms(L, ms);
}

static const luaL_Reg http_funcs[] = {
	{ "request",	lb_http_request },
	{ "error",	lb_http_error },
	{ "sleep",	lb_http_sleep },
	{ "wait",	lb_http_wait },
	{ NULL,		NULL }
};

int
luaopen_walua_httpc(lua_State *L)
{
	luaL_newlib(L, http_funcs);
	return 1;
}
