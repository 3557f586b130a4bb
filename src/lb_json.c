/*
 * lb_json.c - JSON for handlers: a private lua-cjson instance per state
 * whose depth limits are fixed here (no script can reach its settings),
 * and the integer rule every decode in walua follows: a JSON number with
 * no fraction that fits exactly becomes a Lua integer, so ids, codes and
 * timestamps compare and print as users expect (lua-cjson 2.1 gives
 * floats).
 *
 * walua.json itself (encode, decode, null, array) is assembled in
 * lua/walua/host.lua from what this file exports.
 */
#include "lb.h"

#include <math.h>

#include <lua-cjson.h>

#include "pack.h"

#define JSON_MAX_DEPTH	64

static char cjson_key;		/* registry: the private cjson module */
static char event_key;		/* registry: the event decoder */

/*
 * Convert integral floats in the table at idx (recursively) to integers.
 * Depth is bounded by the decoder's own limit.  [-0, +0, m]
 */
void
lb_json_integerize(lua_State *L, int idx, int depth)
{
	lua_Number	n;

	if (depth > JSON_MAX_DEPTH + 9 || !lua_istable(L, idx))
		return;
	idx = lua_absindex(L, idx);
	luaL_checkstack(L, 3, "json too deep");
	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
			n = lua_tonumber(L, -1);
			if (n == floor(n) && fabs(n) <= 9007199254740992.0) {
				lua_pushvalue(L, -2);
				lua_pushinteger(L, (lua_Integer)n);
				lua_rawset(L, idx);
			}
		} else if (lua_istable(L, -1))
			lb_json_integerize(L, -1, depth + 1);
		lua_pop(L, 1);
	}
}

/* Push the state's private cjson module, creating it once.  [-0, +1, m] */
static void
push_cjson(lua_State *L)
{
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &cjson_key) == LUA_TTABLE)
		return;
	lua_pop(L, 1);
	luaopen_cjson(L);				/* (sp += 1) */
	lua_getfield(L, -1, "decode_max_depth");
	lua_pushinteger(L, JSON_MAX_DEPTH);
	lua_call(L, 1, 0);
	lua_getfield(L, -1, "encode_max_depth");
	lua_pushinteger(L, JSON_MAX_DEPTH);
	lua_call(L, 1, 0);
	lua_pushvalue(L, -1);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &cjson_key);
}

/*
 * The host's decoder for stored events: an event wraps the body it came
 * from (ev.raw, ev.errors[i]), so it may be a few levels deeper than the
 * JSON_MAX_DEPTH the HTTP side accepted.  [-0, +1, m]
 */
static void
push_event_decoder(lua_State *L)
{
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &event_key) == LUA_TFUNCTION)
		return;
	lua_pop(L, 1);
	luaopen_cjson(L);
	lua_getfield(L, -1, "decode_max_depth");
	lua_pushinteger(L, JSON_MAX_DEPTH + 8);
	lua_call(L, 1, 0);
	lua_getfield(L, -1, "decode");
	lua_remove(L, -2);
	lua_pushvalue(L, -1);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &event_key);
}

/*
 * decode_event(body) -> ev: a packed event (pack.c), or the JSON text an
 * older walua stored (integers where exact); raises on bad bytes.
 */
int
lb_json_decode_event(lua_State *L)
{
	size_t		 len;
	const char	*p = luaL_checklstring(L, 1, &len);

	if (pack_is(p, len)) {
		if (unpack_value(L, p, len) == -1)
			return luaL_error(L, "a stored event is damaged");
		return 1;
	}
	push_event_decoder(L);
	lua_pushvalue(L, 1);
	lua_call(L, 1, 1);
	lb_json_integerize(L, -1, 0);
	return 1;
}

/*
 * Replace the stored event body on top of the stack by its JSON text
 * (what `inbox show` prints); JSON text is left as it is.  Raises on
 * damaged bytes.  [-1, +1, e]
 */
void
lb_json_event_text(lua_State *L)
{
	size_t		 len;
	const char	*p = lua_tolstring(L, -1, &len);

	if (p == NULL || !pack_is(p, len))
		return;
	push_cjson(L);
	lua_getfield(L, -1, "encode");
	lua_remove(L, -2);
	if (unpack_value(L, p, len) == -1)
		luaL_error(L, "a stored event is damaged");
	lua_call(L, 1, 1);
	lua_remove(L, -2);
}

/* decode(text) -> value, integers where exact; raises on bad JSON. */
int
lb_json_decode_raise(lua_State *L)
{
	luaL_checkstring(L, 1);
	push_cjson(L);
	lua_getfield(L, -1, "decode");
	lua_pushvalue(L, 1);
	lua_call(L, 1, 1);
	lb_json_integerize(L, -1, 0);
	return 1;
}

/* integerize(t) -> t */
static int
lb_json_integerize_l(lua_State *L)
{
	lb_json_integerize(L, 1, 0);
	lua_settop(L, 1);
	return 1;
}

/*
 * The pieces walua/host.lua builds walua.json and cjson from:
 * { encode, decode (raising), null, integerize }.  [-0, +1, m]
 */
int
lb_json_open_cjson(lua_State *L)
{
	lua_newtable(L);
	push_cjson(L);
	lua_getfield(L, -1, "encode");
	lua_setfield(L, -3, "encode");
	lua_getfield(L, -1, "null");
	lua_setfield(L, -3, "null");
	lua_getfield(L, -1, "_VERSION");
	lua_setfield(L, -3, "_VERSION");
	lua_pop(L, 1);
	lua_pushcfunction(L, lb_json_decode_raise);
	lua_setfield(L, -2, "decode");
	lua_pushcfunction(L, lb_json_integerize_l);
	lua_setfield(L, -2, "integerize");
	return 1;
}
