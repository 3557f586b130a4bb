/*
 * lb_log.c - log lines from handler code: walua.log.* and print.
 *
 * A line carries the event being handled ("event", "conversation") and
 * the caller's fields, each value encoded as JSON (tables included); a
 * field named like one of walua's own keys is dropped.  The line itself is
 * written by log.c.
 */
#include "lb.h"

#include <string.h>

#include "buf.h"
#include "lb_ctx.h"
#include "log.h"

static const char *reserved[] = { "ts", "level", "msg", "event",
    "conversation", NULL };

static int
is_reserved(const char *k)
{
	int	i;

	for (i = 0; reserved[i] != NULL; i++)
		if (strcmp(reserved[i], k) == 0)
			return 1;
	return 0;
}

/* Append ,"k":<json of the value at the top> to b; pops it.  [-1, +0, -] */
static void
add_value(lua_State *L, struct buf *b, const char *k, int encode)
{
	const char	*s;
	size_t		 len;

	buf_puts(b, ",");
	buf_json_string(b, k, strlen(k));
	buf_puts(b, ":");
	switch (lua_type(L, -1)) {
	case LUA_TSTRING:
		s = lua_tolstring(L, -1, &len);
		buf_json_string(b, s, len);
		break;
	case LUA_TBOOLEAN:
		buf_puts(b, lua_toboolean(L, -1) ? "true" : "false");
		break;
	case LUA_TNUMBER:
		if (lua_isinteger(L, -1))
			buf_printf(b, "%lld", (long long)lua_tointeger(L, -1));
		else
			buf_printf(b, "%.17g", (double)lua_tonumber(L, -1));
		break;
	case LUA_TTABLE:
		lua_pushvalue(L, encode);
		lua_pushvalue(L, -2);
		if (lua_pcall(L, 1, 1, 0) == LUA_OK &&
		    (s = lua_tolstring(L, -1, &len)) != NULL) {
			buf_append(b, s, len);
			lua_pop(L, 1);
			break;
		}
		lua_pop(L, 1);
		/* FALLTHROUGH */
	default:
		s = luaL_tolstring(L, -1, &len);
		buf_json_string(b, s, len);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

/* C.log(level, msg [, fields]) */
int
lb_log_write(lua_State *L)
{
	struct lb_ctx	*ctx = lb_ctx_of(L);
	const char	*lv = luaL_checkstring(L, 1);
	const char	*msg = luaL_checkstring(L, 2);
	int		 level = log_level_parse(lv), top;
	struct buf	*b;
	char		 key[128];

	if (level < 0)
		return luaL_error(L, "log: unknown level '%s'", lv);
	if (!log_enabled(level))
		return 0;
	top = lua_gettop(L);
	lua_getfield(L, lua_upvalueindex(1), "encode");	/* (sp += 1) */
	b = lb_newbuf(L);	/* a field's __tostring may raise: (sp += 1) */
	if (ctx != NULL && ctx->ev_id != NULL) {
		buf_puts(b, "\"event\":");
		buf_json_string(b, ctx->ev_id, strlen(ctx->ev_id));
		if (ctx->ev_conv != NULL) {
			buf_puts(b, ",\"conversation\":");
			buf_json_string(b, ctx->ev_conv,
			    strlen(ctx->ev_conv));
		}
		/* the provider's message id, unless the fields give their own */
		if (lua_type(L, 3) == LUA_TTABLE)
			lua_pushliteral(L, "message_id");
		if (ctx->ev_msgid != NULL && !(lua_type(L, 3) == LUA_TTABLE &&
		    lua_rawget(L, 3) != LUA_TNIL)) {
			buf_puts(b, ",\"message_id\":");
			buf_json_string(b, ctx->ev_msgid,
			    strlen(ctx->ev_msgid));
		}
		lua_settop(L, top + 2);
	} else
		buf_puts(b, "\"handler\":true");
	if (lua_type(L, 3) == LUA_TTABLE) {
		lua_pushnil(L);
		while (lua_next(L, 3) != 0) {
			if (lua_type(L, -2) == LUA_TSTRING)
				snprintf(key, sizeof(key), "%s",
				    lua_tostring(L, -2));
			else if (lua_type(L, -2) == LUA_TNUMBER)
				snprintf(key, sizeof(key), "%g",
				    (double)lua_tonumber(L, -2));
			else {
				lua_pop(L, 1);
				continue;
			}
			if (is_reserved(key)) {
				lua_pop(L, 1);
				continue;
			}
			add_value(L, b, key, top + 1);
		}
	}
	if (b->data != NULL)
		log_line(level, msg, b->data);
	buf_free(b);
	lua_settop(L, top);
	return 0;
}

/* log.<level>(msg [, fields]): argument checks, then lb_log_write. */
static int
lb_log_level(lua_State *L)
{
	const char *level = lua_tostring(L, lua_upvalueindex(2));

	if (lua_type(L, 1) != LUA_TSTRING)
		return luaL_error(L, "log.%s: msg must be a string", level);
	if (!lua_isnoneornil(L, 2) && lua_type(L, 2) != LUA_TTABLE)
		return luaL_error(L, "log.%s: fields must be a table", level);
	lua_settop(L, 2);
	lua_pushvalue(L, lua_upvalueindex(1));		/* the writer */
	lua_pushvalue(L, lua_upvalueindex(2));
	lua_pushvalue(L, 1);
	lua_pushvalue(L, 2);
	lua_call(L, 3, 0);
	return 0;
}

/*
 * walua.log: { debug, info, warn, error }, each a closure over the writer
 * at the top of the stack (lb_log_write with its cjson upvalue), which it
 * leaves in place.  [-0, +1, m]
 */
int
luaopen_walua_log(lua_State *L)
{
	static const char *levels[] = { "debug", "info", "warn", "error",
	    NULL };
	int	writer = lua_gettop(L), i;

	lua_createtable(L, 0, 4);
	for (i = 0; levels[i] != NULL; i++) {
		lua_pushvalue(L, writer);
		lua_pushstring(L, levels[i]);
		lua_pushcclosure(L, lb_log_level, 2);
		lua_setfield(L, -2, levels[i]);
	}
	return 1;
}
