/*
 * lua_runner.c - run tests/lua/test_*.lua inside a real sandboxed walua
 * state (the same lhost handlers get), with tests/lua/testlib.lua loaded
 * first and fixture(name) reading tests/fixtures/<name>.
 *
 * usage: lua_runner TESTLIB TEST.lua...   (exit 1 when any test failed)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include "buf.h"
#include "lhost.h"
#include "luasrc.h"

static int
l_fixture(lua_State *L)
{
	const char	*name = luaL_checkstring(L, 1);
	struct buf	 b = { 0 };
	char		 path[1024], err[512];

	if (strstr(name, "..") != NULL)
		return luaL_error(L, "fixture: bad name '%s'", name);
	snprintf(path, sizeof(path), "%s/tests/fixtures/%s",
	    getenv("WALUA_ROOT") ? getenv("WALUA_ROOT") : ".", name);
	if (path[0] != '/') {
		char cwd[512];
		if (getcwd(cwd, sizeof(cwd)) == NULL)
			return luaL_error(L, "fixture: getcwd failed");
		snprintf(path, sizeof(path), "%s/tests/fixtures/%s", cwd, name);
	}
	if (luasrc_read(path, &b, err, sizeof(err)) == -1) {
		buf_free(&b);
		return luaL_error(L, "fixture: %s", err);
	}
	lua_pushlstring(L, b.data, b.len);
	buf_free(&b);
	return 1;
}

/* print for test files: plain lines on stdout, not log lines */
static int
l_print(lua_State *L)
{
	int	i, n = lua_gettop(L);

	for (i = 1; i <= n; i++) {
		fputs(luaL_tolstring(L, i, NULL), stdout);
		lua_pop(L, 1);
		fputc(i < n ? '\t' : '\n', stdout);
	}
	fflush(stdout);
	return 0;
}

/* Run file in env (at env_idx); returns 0 or -1 (error printed). */
static int
run_file(struct lhost *h, int env_idx, const char *file)
{
	lua_State	*L = h->L;
	struct buf	 b = { 0 };
	char		 err[512], chunk[1100];

	if (luasrc_read(file, &b, err, sizeof(err)) == -1) {
		fprintf(stderr, "%s\n", err);
		buf_free(&b);
		return -1;
	}
	snprintf(chunk, sizeof(chunk), "@%s", file);
	if (luaL_loadbufferx(L, b.data, b.len, chunk, "t") != LUA_OK) {
		fprintf(stderr, "%s\n", lua_tostring(L, -1));
		lua_pop(L, 1);
		buf_free(&b);
		return -1;
	}
	buf_free(&b);
	lua_pushvalue(L, env_idx);
	lua_setupvalue(L, -2, 1);
	if (lhost_call(h, 0, 0, 60000) != LUA_OK) {
		fprintf(stderr, "%s\n", lua_tostring(L, -1));
		lua_pop(L, 1);
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct lhost	*h;
	lua_State	*L;
	char		 err[512], path[4096];
	int		 i, env, failed = 0;

	if (argc < 3) {
		fprintf(stderr, "usage: lua_runner TESTLIB TEST.lua...\n");
		return 2;
	}
	for (i = 2; i < argc; i++) {
		if ((h = lhost_new(0, err, sizeof(err))) == NULL) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
		L = h->L;
		lua_rawgeti(L, LUA_REGISTRYINDEX, h->host);
		lua_getfield(L, -1, "new_env");
		lua_pushstring(L, "tests/lua");
		lua_call(L, 1, 1);
		env = lua_gettop(L);
		lua_pushcfunction(L, l_fixture);
		lua_setfield(L, env, "fixture");
		lua_pushcfunction(L, l_print);
		lua_setfield(L, env, "print");
		if (realpath(argv[1], path) == NULL ||
		    run_file(h, env, path) == -1 ||
		    realpath(argv[i], path) == NULL ||
		    run_file(h, env, path) == -1) {
			printf("FAIL %s: could not run\n", argv[i]);
			failed++;
			lhost_free(h);
			continue;
		}
		lua_getfield(L, env, "T");
		lua_getfield(L, -1, "finish");
		if (lhost_call(h, 0, 1, 0) != LUA_OK) {
			fprintf(stderr, "%s\n", lua_tostring(L, -1));
			failed++;
		} else
			failed += (int)lua_tointeger(L, -1);
		lhost_free(h);
	}
	return failed ? 1 : 0;
}
