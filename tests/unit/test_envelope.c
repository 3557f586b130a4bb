/*
 * test_envelope.c - the Meta envelope read in C (src/envelope.c) gives the
 * same events as normalize.lua: every fixture, and every fixture with one
 * value removed or replaced by a value of another type, is decoded both
 * ways by event_decode and the events compared field by field, their
 * tables unpacked and compared deeply.  The envelopes the C reader must
 * take are named, so a reader that declined everything would fail.
 * The comparisons are in test_envelope.lua; this file gives it:
 *
 *   decode(provider, body, in_c) -> list of events | nil, rc, err
 *   read_in_c(provider, body) -> whether envelope_read takes the body
 *   check(ok, what) -> counts one assertion
 *   FIXTURES: the fixture files' paths
 */
#include "envelope.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>
#include <lua-cjson.h>

#include "event.h"
#include "pack.h"
#include "unit.h"

static void
set_str(lua_State *L, const char *k, const char *v)
{
	lua_pushstring(L, v);		/* NULL: nil */
	lua_setfield(L, -2, k);
}

static int
l_decode(lua_State *L)
{
	const char		*provider = luaL_checkstring(L, 1), *body;
	struct event_batch	 b;
	struct event		*e;
	size_t			 len;
	char			 err[256];
	int			 rc, i;

	body = luaL_checklstring(L, 2, &len);
	event_envelope_in_c = lua_toboolean(L, 3);
	rc = event_decode(provider, "/hook", NULL, body, len, &b, err,
	    sizeof(err));
	event_envelope_in_c = 1;
	if (rc != 0) {
		lua_pushnil(L);
		lua_pushinteger(L, rc);
		lua_pushstring(L, err);
		return 3;
	}
	lua_createtable(L, b.n, 0);
	for (i = 0; i < b.n; i++) {
		e = &b.ev[i];
		lua_createtable(L, 0, 8);
		set_str(L, "kind", e->kind);
		set_str(L, "conversation", e->conversation);
		set_str(L, "dedup", e->dedup);
		set_str(L, "message_id", e->message_id);
		set_str(L, "status", e->status);
		lua_pushinteger(L, e->code);
		lua_setfield(L, -2, "code");
		if (unpack_value(L, e->body, e->bodylen) == -1)
			lua_pushstring(L, "(does not unpack)");
		lua_setfield(L, -2, "body");
		lua_rawseti(L, -2, i + 1);
	}
	event_batch_free(&b);
	return 1;
}

static int
l_read_in_c(lua_State *L)
{
	struct event_batch	b;
	struct buf		scratch = { NULL, 0, 0 };
	int			rc;

	lua_getglobal(L, "cjson");
	lua_getfield(L, -1, "decode");
	lua_pushvalue(L, 2);
	lua_call(L, 1, 1);
	rc = envelope_read(L, -1, luaL_checkstring(L, 1), "/hook", &b,
	    &scratch);
	buf_free(&scratch);
	event_batch_free(&b);
	lua_pushboolean(L, rc == 1);
	return 1;
}

static int
l_check(lua_State *L)
{
	if (lua_toboolean(L, 1))
		unit_passed++;
	else {
		unit_failed++;
		printf("FAIL %s\n", luaL_optstring(L, 2, "(no description)"));
	}
	return 0;
}

/* The fixture files of dir, appended to the list at the top. */
static void
list_fixtures(lua_State *L, const char *dir)
{
	DIR		*d;
	struct dirent	*de;
	size_t		 n;

	if ((d = opendir(dir)) == NULL) {
		CHECK(!"fixture folder missing");
		return;
	}
	while ((de = readdir(d)) != NULL) {
		n = strlen(de->d_name);
		if (n > 5 && strcmp(de->d_name + n - 5, ".json") == 0) {
			lua_pushfstring(L, "%s/%s", dir, de->d_name);
			lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
		}
	}
	closedir(d);
}

int
main(void)
{
	lua_State	*L = luaL_newstate();

	luaL_openlibs(L);
	luaL_requiref(L, "cjson", luaopen_cjson, 1);
	lua_pop(L, 1);
	lua_register(L, "decode", l_decode);
	lua_register(L, "read_in_c", l_read_in_c);
	lua_register(L, "check", l_check);
	lua_newtable(L);
	list_fixtures(L, "tests/fixtures/meta");
	list_fixtures(L, "tests/fixtures/insider");
	list_fixtures(L, "tests/fixtures/kapso");
	lua_setglobal(L, "FIXTURES");
	if (luaL_dofile(L, "tests/unit/test_envelope.lua") != LUA_OK) {
		printf("FAIL test_envelope.lua: %s\n", lua_tostring(L, -1));
		unit_failed++;
	}
	lua_close(L);
	event_shutdown();
	return UNIT_DONE();
}
