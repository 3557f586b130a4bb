/*
 * lb_util.c - helpers shared by the binding modules: the error object
 * every binding returns as `nil, err`: { status, code, message } with a
 * __tostring.
 */
#include "lb.h"

#include <string.h>

#include "buf.h"

#define ERROR_MT	"walua.Error"
#define BUF_MT		"walua.Buf"

/* "message (status S, code C)" */
static int
error_tostring(lua_State *L)
{
	const char	*msg, *status = NULL, *code = NULL;

	lua_settop(L, 1);
	lua_getfield(L, 1, "message");			/* 2 */
	lua_getfield(L, 1, "status");			/* 3 */
	lua_getfield(L, 1, "code");			/* 4 */
	msg = lua_isstring(L, 2) ? lua_tostring(L, 2) : "error";
	if (!lua_isnil(L, 3))
		status = luaL_tolstring(L, 3, NULL);
	if (!lua_isnil(L, 4))
		code = luaL_tolstring(L, 4, NULL);
	if (status != NULL && code != NULL)
		lua_pushfstring(L, "%s (status %s, code %s)", msg, status, code);
	else if (status != NULL)
		lua_pushfstring(L, "%s (status %s)", msg, status);
	else if (code != NULL)
		lua_pushfstring(L, "%s (code %s)", msg, code);
	else
		lua_pushstring(L, msg);
	return 1;
}

/*
 * Push nil and an error table {status, code, message} (status and code
 * may be absent: status < 0, code NULL).  Returns 2, for `return`.
 * [-0, +2, m]
 */
int
lb_push_error(lua_State *L, int status, const char *code, const char *msg)
{
	lua_pushnil(L);
	lua_createtable(L, 0, 3);
	if (status >= 0) {
		lua_pushinteger(L, status);
		lua_setfield(L, -2, "status");
	}
	if (code != NULL) {
		lua_pushstring(L, code);
		lua_setfield(L, -2, "code");
	}
	lua_pushstring(L, msg);
	lua_setfield(L, -2, "message");
	if (luaL_newmetatable(L, ERROR_MT)) {
		lua_pushcfunction(L, error_tostring);
		lua_setfield(L, -2, "__tostring");
		/* shared by every error: hidden, so no script can change it */
		lua_pushboolean(L, 0);
		lua_setfield(L, -2, "__metatable");
	}
	lua_setmetatable(L, -2);
	return 2;
}

static int
buf_gc(lua_State *L)
{
	buf_free(luaL_checkudata(L, 1, BUF_MT));
	return 0;
}

/*
 * A struct buf owned by the userdata pushed: a binding that fills a buf
 * and may then raise (a __tostring that errors, out of memory) leaves it
 * to the collector instead of leaking it.  The binding may buf_free it
 * early; the collector then frees nothing.  [-0, +1, m]
 */
struct buf *
lb_newbuf(lua_State *L)
{
	struct buf *b = lua_newuserdatauv(L, sizeof(*b), 0);

	memset(b, 0, sizeof(*b));
	if (luaL_newmetatable(L, BUF_MT)) {
		lua_pushcfunction(L, buf_gc);
		lua_setfield(L, -2, "__gc");
		lua_pushboolean(L, 0);
		lua_setfield(L, -2, "__metatable");
	}
	lua_setmetatable(L, -2);
	return b;
}
