/*
 * test_pack.c - an event's table packed and unpacked (src/pack.c): what
 * JSON can hold comes back the same, integers as integers; what it
 * cannot is refused; damaged bytes are an error, never a crash.
 */
#include "pack.h"

#include <stdlib.h>

#include <lauxlib.h>
#include <lualib.h>

#include "unit.h"

/* Evaluate a Lua expression, pack it, unpack it; leave the copy on top. */
static int
round_trip(lua_State *L, const char *expr, struct buf *b)
{
	char	code[512];

	snprintf(code, sizeof(code), "return %s", expr);
	if (luaL_dostring(L, code) != LUA_OK)
		return -1;
	if (pack_value(L, -1, b) == -1)
		return -1;
	lua_pop(L, 1);
	return unpack_value(L, b->data, b->len);
}

/* Run Lua code with the unpacked value as `v`; true if it returns true. */
static int
holds(lua_State *L, const char *code)
{
	int	ok;

	lua_setglobal(L, "v");
	if (luaL_dostring(L, code) != LUA_OK) {
		printf("lua: %s\n", lua_tostring(L, -1));
		lua_pop(L, 1);
		return 0;
	}
	ok = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return ok;
}

int
main(void)
{
	lua_State	*L = luaL_newstate();
	struct buf	 b = { NULL, 0, 0 };
	static const char *const damaged[] = {
		"",			/* nothing */
		"\x01",			/* magic, no value */
		"\x01s\x05" "abc",	/* string shorter than its length */
		"\x01T\x02\x00" "i\x02",	/* one array value of two */
		"\x01T\x00\x01" "tt",	/* a boolean key */
		"\x01i\x80\x80",	/* varint without its end */
		"\x01x",		/* unknown tag */
		"\x01ti",		/* bytes after the value */
		"\x01d\x00\x00",	/* double cut short */
		"{\"kind\":1}",		/* JSON: not packed */
	};
	static const size_t damaged_len[] = { 0, 1, 6, 6, 6, 4, 2, 3, 4, 10 };
	size_t		 i;
	char		 deep[2048];

	luaL_openlibs(L);

	CHECK(round_trip(L, "{ kind = 'message', text = 'Merhaba \\0 dünya',"
	    " n = 42, neg = -7, big = math.maxinteger, small = math.mininteger,"
	    " f = 2.5, e = 1e300, yes = true, no = false,"
	    " list = { 1, 'two', { three = 3 } }, empty = {} }", &b) == 0);
	CHECK(b.data[0] == PACK_MAGIC);
	CHECK(holds(L, "return v.kind == 'message' and v.text == "
	    "'Merhaba \\0 dünya' and math.type(v.n) == 'integer' and v.n == 42"
	    " and v.neg == -7 and v.big == math.maxinteger and v.small == "
	    "math.mininteger and v.f == 2.5 and v.e == 1e300 and v.yes == true"
	    " and v.no == false and #v.list == 3 and v.list[2] == 'two' and "
	    "v.list[3].three == 3 and next(v.empty) == nil"));

	/* integral floats travel as integers, as JSON + integerize did */
	CHECK(round_trip(L, "{ ts = 1749416383.0, z = -0.0 }", &b) == 0);
	CHECK(holds(L, "return math.type(v.ts) == 'integer' and "
	    "v.ts == 1749416383 and math.type(v.z) == 'integer'"));

	/* infinities and NaN become JSON null (a NULL light userdata) */
	CHECK(round_trip(L, "{ a = 1/0, b = -1/0, c = 0/0 }", &b) == 0);
	lua_getfield(L, -1, "a");
	CHECK(lua_islightuserdata(L, -1) && lua_touserdata(L, -1) == NULL);
	lua_pop(L, 2);

	/* a sparse table keeps its keys */
	CHECK(round_trip(L, "{ [1] = 'a', [3] = 'c', ['1'] = 'string one' }",
	    &b) == 0);
	CHECK(holds(L, "return v[1] == 'a' and v[3] == 'c' and "
	    "v['1'] == 'string one' and v[2] == nil"));

	/*
	 * A table's key count is written after its keys: one byte for up
	 * to 127, more (what follows moved) for 128 and past 16383, here
	 * inside other tables with values after them.
	 */
	CHECK(luaL_dostring(L, "local function keys(n) local t = {} for i ="
	    " 1, n do t['k' .. i] = i end return t end return { a = { "
	    "keys(127), keys(128), keys(20000) }, z = 'after' }") == LUA_OK);
	CHECK(pack_value(L, -1, &b) == 0);
	lua_pop(L, 1);
	CHECK(unpack_value(L, b.data, b.len) == 0);
	CHECK(holds(L, "local function ok(t, n) local c = 0 for k, x in "
	    "pairs(t) do if t['k' .. x] ~= x then return false end c = c + 1"
	    " end return c == n end return ok(v.a[1], 127) and "
	    "ok(v.a[2], 128) and ok(v.a[3], 20000) and v.z == 'after'"));
	/* an event's small tables take one byte for the count, as before */
	CHECK(round_trip(L, "{ k = { x = 1 } }", &b) == 0);
	lua_pop(L, 1);
	CHECK(b.len == 15);	/* magic, T 0 1, s k, T 0 1, s x, i 1 */

	/* what JSON cannot hold is refused */
	CHECK(luaL_dostring(L, "return { f = print }") == LUA_OK);
	CHECK(pack_value(L, -1, &b) == -1);
	lua_pop(L, 1);
	CHECK(luaL_dostring(L, "return { [true] = 1 }") == LUA_OK);
	CHECK(pack_value(L, -1, &b) == 0);	/* packs, but ... */
	CHECK(unpack_value(L, b.data, b.len) == -1);	/* ... not a JSON key */
	lua_pop(L, 1);

	/* too deep is refused both ways */
	/* 120 tables, one in another */
	strcpy(deep, "return ");
	for (i = 0; i < 120; i++)
		strcat(deep, "{");
	strcat(deep, "1");
	for (i = 0; i < 120; i++)
		strcat(deep, "}");
	CHECK(luaL_dostring(L, deep) == LUA_OK);
	CHECK(pack_value(L, -1, &b) == -1);
	lua_pop(L, 1);

	/* damaged bytes: an error, nothing pushed */
	for (i = 0; i < sizeof(damaged) / sizeof(damaged[0]); i++) {
		int top = lua_gettop(L);

		CHECK(unpack_value(L, damaged[i], damaged_len[i]) == -1);
		CHECK(lua_gettop(L) == top);
	}
	CHECK(pack_is("\x01", 1) && !pack_is("{", 1) && !pack_is("", 0));

	buf_free(&b);
	lua_close(L);
	return UNIT_DONE();
}
