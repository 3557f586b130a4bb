/*
 * run.c - `walua run SCRIPT [ARGS...]`: run an admin script, bundled
 * (scripts/NAME.lua, compiled into the binary) or a file path.
 *
 * Admin scripts are trusted: they get the full standard library plus the
 * walua modules (walua.json, walua.log, walua.store, walua.inbox and
 * walua.settings, the loaded configuration).  `-c FILE` anywhere on the
 * command line names walua's config (README, Commands), else
 * ./walua.conf.lua when present, else the built-in demo.  The script gets
 * its arguments in `arg` (arg[0] is the script) and as `...`; a number it
 * returns is the exit status, and an error it raises prints the message
 * and exits 1.
 */
#include "run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "buf.h"
#include "client.h"
#include "config.h"
#include "lb.h"
#include "lb_ctx.h"
#include "luasrc.h"

/* package.searchers entry: embedded lua/walua/NAME.lua modules. */
static int
search_embedded(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);

	if (strncmp(name, "walua.", 6) != 0)
		return 0;
	if (luasrc_load(L, name) != LUA_OK) {
		lua_pushfstring(L, "\n\tno embedded module '%s'", name);
		return 1;
	}
	lua_pushstring(L, name);
	return 2;
}

static int
open_cjson(lua_State *L)
{
	return lb_json_open_cjson(L);
}

static int
open_log(lua_State *L)
{
	lb_json_open_cjson(L);
	lua_pushcclosure(L, lb_log_write, 1);
	return luaopen_walua_log(L);
}

static int
msghandler(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);

	if (msg == NULL)
		msg = luaL_tolstring(L, 1, NULL);
	luaL_traceback(L, L, msg, 1);
	return 1;
}

/*
 * The admin scripts also read these variables, which win over the config
 * file (README, Admin scripts).  [-0, +0, m] on the settings table at the
 * top.
 */
static void
env_overrides(lua_State *L)
{
	static const char *vars[][3] = {
		{ "insider", "api_url", "WALUA_INSIDER_API_URL" },
		{ "insider", "gateway_url", "WALUA_INSIDER_GATEWAY_URL" },
		{ "insider", "auth_key", "INSIDER_AUTH_KEY" },
		{ "insider", "client_id", "INSIDER_CLIENT_ID" },
		{ "insider", "client_secret", "INSIDER_CLIENT_SECRET" },
		{ "kapso", "api_url", "WALUA_KAPSO_API_URL" },
		{ "kapso", "api_key", "KAPSO_API_KEY" },
	};
	const char	*v;
	size_t		 i;

	for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		if ((v = getenv(vars[i][2])) == NULL || *v == '\0')
			continue;
		if (lua_getfield(L, -1, vars[i][0]) != LUA_TTABLE) {
			lua_pop(L, 1);
			lua_newtable(L);
			lua_pushvalue(L, -1);
			lua_setfield(L, -3, vars[i][0]);
		}
		lua_pushstring(L, v);
		lua_setfield(L, -2, vars[i][1]);
		lua_pop(L, 1);
	}
}

struct run_args {
	struct config	*cfg;
	const char	*script;
	char		**args;
	int		 nargs;
	int		 status;
};

/* require "walua": walua.sleep, which blocks in an admin script. */
static int
open_walua(lua_State *L)
{
	luaopen_walua_httpc(L);
	lua_createtable(L, 0, 1);
	lua_getfield(L, -2, "wait");
	lua_setfield(L, -2, "sleep");
	return 1;
}

/* The C modules an admin script may require. */
static const luaL_Reg preloads[] = {
	{ "cjson", open_cjson },
	{ "walua.log", open_log },
	{ "walua.store", luaopen_walua_store },
	{ "walua.inbox", luaopen_walua_inbox },
	{ "walua.passwd", luaopen_walua_passwd },
	{ "walua.httpc", luaopen_walua_httpc },
	{ "walua.crypto", luaopen_walua_crypto },
	{ "walua", open_walua },
	{ "walua.outbound", luaopen_walua_outbound },
	{ NULL, NULL }
};

static int
run_protected(lua_State *L)
{
	struct run_args		*a = lua_touserdata(L, 1);
	const struct luasrc	*f;
	char			 path[512], chunk[520], *real;
	struct buf		 src = { 0 };
	char			 err[512];
	int			 i;

	luaL_openlibs(L);
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "searchers");
	lua_pushcfunction(L, search_embedded);
	lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
	lua_pop(L, 1);
	lua_getfield(L, -1, "preload");
	luaL_setfuncs(L, preloads, 0);
	lua_pop(L, 2);

	/* walua.settings: the checked config, decoded */
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "loaded");
	lb_json_open_cjson(L);
	lua_getfield(L, -1, "decode");
	lua_pushlstring(L, a->cfg->json, a->cfg->jsonlen);
	lua_call(L, 1, 1);
	lua_pushstring(L, a->cfg->file ? a->cfg->file : "");
	lua_setfield(L, -2, "_file");
	env_overrides(L);
	lua_setfield(L, -3, "walua.settings");
	lua_pop(L, 3);

	if (strchr(a->script, '/') == NULL &&
	    strstr(a->script, ".lua") == NULL) {
		snprintf(path, sizeof(path), "scripts/%s.lua", a->script);
		if ((f = luasrc_find(path)) == NULL)
			return luaL_error(L, "no bundled script '%s' (a file "
			    "path needs a '/' or '.lua')", a->script);
		snprintf(chunk, sizeof(chunk), "@%s", path);
		if (luaL_loadbufferx(L, f->data, f->len, chunk, "t") != LUA_OK)
			return lua_error(L);
	} else {
		/* realpath allocates: a path may be as long as the system
		 * allows, and nothing below may raise while it is held */
		if ((real = realpath(a->script, NULL)) == NULL)
			return luaL_error(L, "cannot find script '%s'",
			    a->script);
		i = luasrc_read(real, &src, err, sizeof(err));
		free(real);
		if (i == -1) {
			buf_free(&src);
			return luaL_error(L, "%s", err);
		}
		snprintf(chunk, sizeof(chunk), "@%s", a->script);
		i = luaL_loadbufferx(L, src.data, src.len, chunk, "t");
		buf_free(&src);
		if (i != LUA_OK)
			return lua_error(L);
	}
	lua_createtable(L, a->nargs, 1);		/* arg */
	lua_pushstring(L, a->script);
	lua_rawseti(L, -2, 0);
	for (i = 0; i < a->nargs; i++) {
		lua_pushstring(L, a->args[i]);
		lua_rawseti(L, -2, i + 1);
	}
	lua_setglobal(L, "arg");
	luaL_checkstack(L, a->nargs + 2, "too many arguments");
	for (i = 0; i < a->nargs; i++)
		lua_pushstring(L, a->args[i]);
	lua_pushcfunction(L, msghandler);
	lua_insert(L, -(a->nargs + 2));
	if (lua_pcall(L, a->nargs, 1, -(a->nargs + 2)) != LUA_OK)
		return lua_error(L);
	a->status = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
	return 0;
}

/* walua run [-c FILE] SCRIPT [ARGS...]; argv[0] is "run". */
int
run_main(int argc, char **argv)
{
	struct run_args	 a;
	const char	*file = NULL;
	char		 err[4096], **rest;
	lua_State	*L;
	int		 i, n = 0;

	memset(&a, 0, sizeof(a));
	if ((rest = calloc((size_t)argc + 1, sizeof(char *))) == NULL)
		return 1;
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			file = argv[++i];
		else if (a.script == NULL)
			a.script = argv[i];
		else
			rest[n++] = argv[i];
	}
	if (a.script == NULL) {
		fprintf(stderr, "usage: walua run [-c FILE] SCRIPT [ARGS...]\n"
		    "bundled scripts: inbox\n");
		free(rest);
		return 2;
	}
	if (file == NULL && access(config_default_file(), F_OK) == 0)
		file = config_default_file();
	if ((a.cfg = config_load(file, err, sizeof(err))) == NULL) {
		fprintf(stderr, "walua run: %s\n", err);
		free(rest);
		return 1;
	}
	a.args = rest;
	a.nargs = n;
	lb_store_setup(a.cfg->database, a.cfg->durability);
	if ((L = luaL_newstate()) == NULL) {
		fprintf(stderr, "walua run: out of memory\n");
		config_free(a.cfg);
		free(rest);
		return 1;
	}
	lb_ctx_set(L, NULL);		/* no handler, no budget here */
	lua_pushcfunction(L, run_protected);
	lua_pushlightuserdata(L, &a);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
		fprintf(stderr, "%s\n", lua_tostring(L, -1));
		a.status = 1;
	}
	lua_close(L);
	lb_store_close();
	client_cleanup();
	config_free(a.cfg);
	free(rest);
	return a.status;
}
