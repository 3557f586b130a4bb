/*
 * config.c - load the Lua configuration file, check it (lua/walua/config.lua
 * does the checking and the defaults), and turn it into a struct config.
 *
 * A private Lua state runs the operator's file with a small environment
 * (base functions, string, table, math, env()); it is closed before
 * config_load returns.  The checked table is also kept as JSON (cfg->json),
 * which is what worker processes receive: config_from_json reads it back
 * with the same reader, so both sides agree on every value.
 *
 * The current configuration is shared by the HTTP threads and the
 * supervisor; it is reference counted so a reload can replace it while
 * requests still use the old one.
 */
#include "config.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <lua-cjson.h>

#include "auth.h"
#include "db_pg.h"
#include "ipc.h"
#include "luasrc.h"
#include "passwd.h"

#define DEFAULT_FILE	"walua.conf.lua"
#define DEMO_CONFIG	"lua/examples/demo.conf.lua"

/*
 * The largest limits.max_body: a quarter of IPC_MAX_FRAME (ipc.h), the
 * frame each event of a body travels in to a handler.  An event's JSON
 * holds its part of the body (ev.raw), may repeat its text (ev.text, and
 * a media caption in ev.media.caption too), and cjson writes each '/' as
 * "\/": ordinary bodies grow up to about four times.  A body that grows
 * more (each DEL byte becomes a six-byte escape) is refused 413 at
 * delivery, before it is stored (httpd.c), so an acknowledged event
 * always fits.
 */
#define MAX_BODY_LIMIT	(IPC_MAX_FRAME / 4)

int	luaopen_cjson_safe(lua_State *);

static pthread_mutex_t	 cur_mu = PTHREAD_MUTEX_INITIALIZER;
static struct config	*cur;

static const char *providers[] = { "insider", "kapso", "meta", NULL };
static const char *auths[] = { "bearer", "oauth2", "kapso", "meta", NULL };
static const char *durabilities[] = { "off", "normal", "full", NULL };

const char *
config_default_file(void)
{
	return DEFAULT_FILE;
}

/* env(name [, default]): a secret or setting from the environment. */
static int
l_env(lua_State *L)
{
	const char	*name = luaL_checkstring(L, 1);
	const char	*v = getenv(name);

	if (v != NULL)
		lua_pushstring(L, v);
	else if (lua_gettop(L) >= 2)
		lua_settop(L, 2);
	else
		return luaL_error(L, "environment variable '%s' is not set",
		    name);
	return 1;
}

/* The environment a config file runs in: no io, no os.execute. */
static void
push_config_env(lua_State *L)
{
	static const char *base[] = { "assert", "error", "ipairs", "next",
	    "pairs", "pcall", "rawequal", "rawget", "rawlen", "rawset", "select",
	    "setmetatable", "getmetatable", "tonumber", "tostring", "type",
	    "xpcall", "_VERSION", NULL };
	static const char *libs[] = { "string", "table", "math", "utf8", NULL };
	int	i;

	lua_newtable(L);				/* env */
	for (i = 0; base[i] != NULL; i++) {
		lua_getglobal(L, base[i]);
		lua_setfield(L, -2, base[i]);
	}
	for (i = 0; libs[i] != NULL; i++) {
		lua_getglobal(L, libs[i]);
		lua_setfield(L, -2, libs[i]);
	}
	lua_pushcfunction(L, l_env);
	lua_setfield(L, -2, "env");
}

/* Index of s in list, or -1. */
static int
lookup(const char *const *list, const char *s)
{
	int	i;

	for (i = 0; list[i] != NULL; i++)
		if (strcmp(list[i], s) == 0)
			return i;
	return -1;
}

/* The string field k of the table at t, copied, or NULL.  [-0, +0, m] */
static char *
dupfield(lua_State *L, int t, const char *k)
{
	char	*s = NULL;

	if (lua_getfield(L, t, k) == LUA_TSTRING) {
		if ((s = strdup(lua_tostring(L, -1))) == NULL)
			luaL_error(L, "out of memory");
	}
	lua_pop(L, 1);
	return s;
}

static long
intfield(lua_State *L, int t, const char *k)
{
	long	v;

	lua_getfield(L, t, k);
	v = (long)lua_tointeger(L, -1);
	lua_pop(L, 1);
	return v;
}

static void
checked_alloc(lua_State *L, void *p)
{
	if (p == NULL)
		luaL_error(L, "out of memory");
}

/*
 * Split a checked "HOST:PORT" into a copy of HOST and the port.  An IPv6
 * HOST may be in brackets ("[::1]:8080", as in a URL): they are not part
 * of the address getaddrinfo() takes.
 */
static void
split_address(lua_State *L, const char *addr, char **host, int *port)
{
	const char	*s = strrchr(addr, ':');
	size_t		 len = s ? (size_t)(s - addr) : 0;

	if (len >= 2 && addr[0] == '[' && addr[len - 1] == ']')
		*host = strndup(addr + 1, len - 2);
	else
		*host = strndup(addr, len);
	checked_alloc(L, *host);
	*port = s ? atoi(s + 1) : 0;
}

/*
 * The fingerprint of a client's secret, stored with each token issued to
 * it so that a token dies when the secret changes: HMAC-SHA256 under the
 * secret of a label and the client id (the secret itself is never
 * stored, and equal secrets of two clients give different prints).
 * [-0, +0, m]  may raise
 */
static void
client_fingerprint(lua_State *L, struct oauth_client *cl)
{
	const char	*msg;
	size_t		 len;

	msg = lua_pushfstring(L, "walua oauth2 token binding\n%s", cl->id);
	len = lua_rawlen(L, -1);
	auth_hmac_hex(cl->secret, msg, len, cl->secret_fp);
	lua_pop(L, 1);
	if (strlen(cl->secret_fp) != 64)
		luaL_error(L, "cannot fingerprint the secret of oauth2 client "
		    "'%s'", cl->id);
}

/*
 * Fill c from the checked table at the top of the stack.  Runs protected;
 * raises only on memory exhaustion (c is then freed by the caller).
 */
static void
read_table(lua_State *L, struct config *c)
{
	int	t = lua_gettop(L), i, sub;
	char	*s;

	c->listen = dupfield(L, t, "listen");
	checked_alloc(L, c->listen);
	split_address(L, c->listen, &c->listen_host, &c->listen_port);
	c->admin_listen = dupfield(L, t, "admin_listen");	/* false: NULL */
	if (c->admin_listen != NULL)
		split_address(L, c->admin_listen, &c->admin_host,
		    &c->admin_port);
	c->database = dupfield(L, t, "database");
	c->workers = (int)intfield(L, t, "workers");
	s = dupfield(L, t, "durability");
	c->durability = s ? lookup(durabilities, s) : DURABILITY_NORMAL;
	free(s);
	s = dupfield(L, t, "log_level");
	c->log_level = s ? (lookup((const char *[]){ "debug", "info", "warn",
	    "error", NULL }, s)) : 1;
	free(s);
	c->log_file = dupfield(L, t, "log_file");

	lua_getfield(L, t, "handlers");
	c->nhandlers = (int)lua_rawlen(L, -1);
	c->handlers = calloc((size_t)c->nhandlers + 1, sizeof(char *));
	checked_alloc(L, c->handlers);
	for (i = 0; i < c->nhandlers; i++) {
		lua_rawgeti(L, -1, i + 1);
		c->handlers[i] = strdup(lua_tostring(L, -1));
		checked_alloc(L, c->handlers[i]);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);

	lua_getfield(L, t, "endpoints");
	sub = lua_gettop(L);
	c->nendpoints = (int)lua_rawlen(L, sub);
	c->endpoints = calloc((size_t)c->nendpoints + 1, sizeof(*c->endpoints));
	checked_alloc(L, c->endpoints);
	for (i = 0; i < c->nendpoints; i++) {
		struct endpoint *e = &c->endpoints[i];

		lua_rawgeti(L, sub, i + 1);
		e->path = dupfield(L, -1, "path");
		s = dupfield(L, -1, "provider");
		e->provider = s ? lookup(providers, s) : 0;
		if (e->provider < 0)
			e->provider = 0;
		e->provider_name = providers[e->provider];
		free(s);
		lua_getfield(L, -1, "auth");
		s = dupfield(L, -1, "type");
		e->auth = s ? lookup(auths, s) : 0;
		free(s);
		e->token = dupfield(L, -1, "token");
		e->secret = dupfield(L, -1, "secret");
		e->app_secret = dupfield(L, -1, "app_secret");
		e->verify_token = dupfield(L, -1, "verify_token");
		lua_pop(L, 2);
		checked_alloc(L, e->path);
	}
	lua_pop(L, 1);

	lua_getfield(L, t, "oauth2");
	sub = lua_gettop(L);
	c->oauth2_path = dupfield(L, sub, "path");
	c->token_ttl = (int)intfield(L, sub, "token_ttl");
	lua_getfield(L, sub, "clients");
	c->nclients = (int)lua_rawlen(L, -1);
	c->clients = calloc((size_t)c->nclients + 1, sizeof(*c->clients));
	checked_alloc(L, c->clients);
	for (i = 0; i < c->nclients; i++) {
		struct oauth_client *cl = &c->clients[i];
		int j;

		lua_rawgeti(L, -1, i + 1);
		cl->id = dupfield(L, -1, "id");
		cl->secret = dupfield(L, -1, "secret");
		cl->refresh_token = dupfield(L, -1, "refresh_token");
		checked_alloc(L, cl->id);
		checked_alloc(L, cl->secret);
		client_fingerprint(L, cl);
		lua_getfield(L, -1, "scopes");
		cl->nscopes = (int)lua_rawlen(L, -1);
		cl->scopes = calloc((size_t)cl->nscopes + 1, sizeof(char *));
		checked_alloc(L, cl->scopes);
		for (j = 0; j < cl->nscopes; j++) {
			lua_rawgeti(L, -1, j + 1);
			cl->scopes[j] = strdup(lua_tostring(L, -1));
			checked_alloc(L, cl->scopes[j]);
			lua_pop(L, 1);
		}
		lua_pop(L, 2);
	}
	lua_pop(L, 2);

	lua_getfield(L, t, "cluster");
	c->cluster_lease_s = (int)intfield(L, lua_gettop(L), "lease_s");
	lua_pop(L, 1);

	lua_getfield(L, t, "limits");
	sub = lua_gettop(L);
	c->limits.max_body = (size_t)intfield(L, sub, "max_body");
	c->limits.handler_timeout_ms = (int)intfield(L, sub,
	    "handler_timeout_ms");
	c->limits.handler_memory_mb = (int)intfield(L, sub,
	    "handler_memory_mb");
	c->limits.handler_concurrency = (int)intfield(L, sub,
	    "handler_concurrency");
	c->limits.max_queue = intfield(L, sub, "max_queue");
	c->limits.retries = (int)intfield(L, sub, "retries");
	lua_getfield(L, sub, "dedup_days");
	/* rounded: the workers get it through JSON, with 14 digits */
	c->limits.dedup_ms = (int64_t)llround(lua_tonumber(L, -1) * 86400000);
	lua_pop(L, 1);
	c->limits.shutdown_timeout_ms = (int)intfield(L, sub,
	    "shutdown_timeout_ms");
	lua_getfield(L, sub, "retry_backoff_ms");
	c->limits.nbackoff = (int)lua_rawlen(L, -1);
	c->limits.backoff_ms = calloc((size_t)c->limits.nbackoff + 1,
	    sizeof(int));
	checked_alloc(L, c->limits.backoff_ms);
	for (i = 0; i < c->limits.nbackoff; i++) {
		lua_rawgeti(L, -1, i + 1);
		c->limits.backoff_ms[i] = (int)lua_tointeger(L, -1);
		lua_pop(L, 1);
	}
	lua_pop(L, 2);

	if (lua_getfield(L, t, "console") == LUA_TTABLE) {
		sub = lua_gettop(L);
		c->console_path = dupfield(L, sub, "path");
		checked_alloc(L, c->console_path);
		lua_getfield(L, sub, "users");
		c->nconsole_users = (int)lua_rawlen(L, -1);
		c->console_users = calloc((size_t)c->nconsole_users + 1,
		    sizeof(*c->console_users));
		checked_alloc(L, c->console_users);
		for (i = 0; i < c->nconsole_users; i++) {
			struct console_user *u = &c->console_users[i];

			lua_rawgeti(L, -1, i + 1);
			u->name = dupfield(L, -1, "name");
			u->password_hash = dupfield(L, -1, "password_hash");
			checked_alloc(L, u->name);
			checked_alloc(L, u->password_hash);
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 1);

	lua_getfield(L, t, "http");
	sub = lua_gettop(L);
	c->http_threads = (int)intfield(L, sub, "threads");
	c->http_max_connections = (int)intfield(L, sub, "max_connections");
	c->http_per_ip = (int)intfield(L, sub, "per_ip_connections");
	c->http_timeout_s = (int)intfield(L, sub, "timeout_s");
	c->http_header_timeout_s = (int)intfield(L, sub, "header_timeout_s");
	c->http_request_timeout_s = (int)intfield(L, sub, "request_timeout_s");
	lua_pop(L, 1);
	checked_alloc(L, c->database);
	checked_alloc(L, c->oauth2_path);
}

struct load_args {
	const char	*file;		/* NULL: built-in demo */
	const char	*json;		/* set: read a worker's JSON instead */
	size_t		 jsonlen;
	struct config	*c;
};

/* valid_hash(s): whether s is a console password hash (passwd.c). */
static int
l_valid_hash(lua_State *L)
{
	lua_pushboolean(L, passwd_valid(luaL_checkstring(L, 1)));
	return 1;
}

/*
 * check_url(s): nil when s is a PostgreSQL URL libpq accepts, else why
 * not (never with the URL's password in it).
 */
static int
l_check_url(lua_State *L)
{
	char	err[256];

	if (pg_check_url(luaL_checkstring(L, 1), err, sizeof(err)) == 0)
		return 0;
	lua_pushstring(L, err);
	return 1;
}

/* Everything that touches Lua, run under lua_pcall (lua.c's pmain). */
static int
load_protected(lua_State *L)
{
	struct load_args	*a = lua_touserdata(L, 1);
	const struct luasrc	*demo;
	char			 dir[PATH_MAX], *tmp;
	int			 t;

	luaL_openlibs(L);
	luaL_requiref(L, "cjson", luaopen_cjson_safe, 0);
	t = lua_gettop(L);

	if (a->json != NULL) {
		lua_getfield(L, t, "decode");
		lua_pushlstring(L, a->json, a->jsonlen);
		lua_call(L, 1, 2);
		if (lua_isnil(L, -2))
			return luaL_error(L, "bad configuration from the "
			    "supervisor: %s", lua_tostring(L, -1));
		lua_pop(L, 1);
		read_table(L, a->c);
		return 0;
	}

	/* the file's chunk, with its environment as upvalue 1 */
	if (a->file == NULL) {
		if ((demo = luasrc_find(DEMO_CONFIG)) == NULL)
			return luaL_error(L, "no built-in configuration");
		if (luaL_loadbufferx(L, demo->data, demo->len,
		    "@" DEMO_CONFIG, "t") != LUA_OK)
			return lua_error(L);
	} else if (luaL_loadfilex(L, a->file, "t") != LUA_OK)
		return lua_error(L);
	push_config_env(L);
	lua_setupvalue(L, -2, 1);
	lua_call(L, 0, 1);				/* (sp += 1) the table */

	if (luasrc_load(L, "walua.config") != LUA_OK)
		return lua_error(L);
	lua_call(L, 0, 1);				/* module */
	lua_getfield(L, -1, "check");
	lua_pushvalue(L, -3);				/* the table */
	lua_pushstring(L, a->file ? a->file : DEMO_CONFIG);
	if (a->file == NULL)
		lua_pushnil(L);				/* demo: as written */
	else {
		if ((tmp = strdup(a->file)) == NULL)
			return luaL_error(L, "out of memory");
		if (realpath(dirname(tmp), dir) == NULL) {
			free(tmp);
			return luaL_error(L, "cannot resolve '%s': %s",
			    a->file, strerror(errno));
		}
		free(tmp);
		lua_pushstring(L, dir);
	}
	lua_pushinteger(L, MAX_BODY_LIMIT);
	lua_pushcfunction(L, l_valid_hash);
	lua_pushcfunction(L, l_check_url);
	lua_call(L, 6, 1);				/* checked table */
	lua_pushboolean(L, a->file == NULL);
	lua_setfield(L, -2, "_builtin");

	/* what loads but may not work: lines, for walua check */
	lua_getfield(L, -2, "warnings");
	lua_pushvalue(L, -2);
	lua_call(L, 1, 1);
	a->c->warnings = strdup(lua_tostring(L, -1));
	checked_alloc(L, a->c->warnings);
	lua_pop(L, 1);

	lua_getfield(L, t, "encode");
	lua_pushvalue(L, -2);
	lua_call(L, 1, 1);
	a->c->json = strdup(lua_tolstring(L, -1, &a->c->jsonlen));
	checked_alloc(L, a->c->json);
	lua_pop(L, 1);
	read_table(L, a->c);
	return 0;
}

static struct config *
load(struct load_args *a, char *err, size_t errlen)
{
	lua_State	*L;

	if ((a->c = calloc(1, sizeof(*a->c))) == NULL ||
	    (L = luaL_newstate()) == NULL) {
		free(a->c);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (a->file != NULL && (a->c->file = strdup(a->file)) == NULL) {
		lua_close(L);
		free(a->c);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	lua_pushcfunction(L, load_protected);
	lua_pushlightuserdata(L, a);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
		const char *m = lua_tostring(L, -1);
		snprintf(err, errlen, "%s", m ? m : "error object is not a string");
		lua_close(L);
		config_free(a->c);
		return NULL;
	}
	lua_close(L);
	return a->c;
}

/*
 * Load and check the configuration file (NULL: the built-in demo).  On
 * failure returns NULL and puts the reason, naming the file, in err.
 * The result has one reference, the caller's.
 */
struct config *
config_load(const char *file, char *err, size_t errlen)
{
	struct load_args a = { .file = file };
	struct config	*c;
	int		 i;

	/*
	 * The digests the HTTP threads compare bearer tokens with: here,
	 * not in config_from_json, so that a worker process, which takes
	 * no delivery, never sets libcrypto up (2 MiB of its RSS).
	 */
	if ((c = load(&a, err, errlen)) != NULL)
		for (i = 0; i < c->nendpoints; i++)
			if (c->endpoints[i].token != NULL)
				auth_digest(&c->endpoints[i].token_digest,
				    c->endpoints[i].token);
	return c;
}

/* Rebuild a configuration from cfg->json (in a worker process). */
struct config *
config_from_json(const char *json, size_t len, char *err, size_t errlen)
{
	struct load_args a = { .json = json, .jsonlen = len };
	struct config	*c;

	if ((c = load(&a, err, errlen)) != NULL) {
		c->json = strndup(json, len);
		c->jsonlen = len;
		if (c->json == NULL) {
			config_free(c);
			snprintf(err, errlen, "out of memory");
			return NULL;
		}
	}
	return c;
}

void
config_free(struct config *c)
{
	int	i;

	if (c == NULL)
		return;
	free(c->file);
	free(c->listen);
	free(c->listen_host);
	free(c->admin_listen);
	free(c->admin_host);
	free(c->database);
	for (i = 0; c->handlers != NULL && i < c->nhandlers; i++)
		free(c->handlers[i]);
	free(c->handlers);
	for (i = 0; c->endpoints != NULL && i < c->nendpoints; i++) {
		free(c->endpoints[i].path);
		free(c->endpoints[i].token);
		free(c->endpoints[i].secret);
		free(c->endpoints[i].app_secret);
		free(c->endpoints[i].verify_token);
	}
	free(c->endpoints);
	for (i = 0; c->clients != NULL && i < c->nclients; i++) {
		int j;

		free(c->clients[i].id);
		free(c->clients[i].secret);
		free(c->clients[i].refresh_token);
		for (j = 0; c->clients[i].scopes != NULL &&
		    j < c->clients[i].nscopes; j++)
			free(c->clients[i].scopes[j]);
		free(c->clients[i].scopes);
	}
	free(c->clients);
	free(c->oauth2_path);
	free(c->limits.backoff_ms);
	free(c->log_file);
	free(c->console_path);
	for (i = 0; c->console_users != NULL && i < c->nconsole_users; i++) {
		free(c->console_users[i].name);
		free(c->console_users[i].password_hash);
	}
	free(c->console_users);
	free(c->warnings);
	free(c->json);
	free(c);
}

/* Make c the current configuration (taking the caller's reference). */
void
config_set_current(struct config *c)
{
	struct config	*old;

	pthread_mutex_lock(&cur_mu);
	old = cur;
	cur = c;
	pthread_mutex_unlock(&cur_mu);
	if (old != NULL)
		config_put(old);
}

/* A new reference to the current configuration (NULL before the first). */
struct config *
config_get(void)
{
	struct config	*c;

	pthread_mutex_lock(&cur_mu);
	if ((c = cur) != NULL)
		c->refs++;
	pthread_mutex_unlock(&cur_mu);
	return c;
}

/* Drop a reference; the last one frees. */
void
config_put(struct config *c)
{
	int	last;

	if (c == NULL)
		return;
	pthread_mutex_lock(&cur_mu);
	last = --c->refs < 0;
	pthread_mutex_unlock(&cur_mu);
	if (last)
		config_free(c);
}

const struct endpoint *
config_endpoint(const struct config *c, const char *path)
{
	int	i;

	for (i = 0; i < c->nendpoints; i++)
		if (strcmp(c->endpoints[i].path, path) == 0)
			return &c->endpoints[i];
	return NULL;
}

const struct oauth_client *
config_client(const struct config *c, const char *id)
{
	int	i;

	for (i = 0; i < c->nclients; i++)
		if (strcmp(c->clients[i].id, id) == 0)
			return &c->clients[i];
	return NULL;
}

const struct console_user *
config_console_user(const struct config *c, const char *name)
{
	int	i;

	for (i = 0; i < c->nconsole_users; i++)
		if (strcmp(c->console_users[i].name, name) == 0)
			return &c->console_users[i];
	return NULL;
}

/* The delay before retry number attempt (1-based); the last one repeats. */
int
config_backoff_ms(const struct config *c, int attempt)
{
	if (c->limits.nbackoff == 0)
		return 1000;
	if (attempt > c->limits.nbackoff)
		attempt = c->limits.nbackoff;
	return c->limits.backoff_ms[attempt < 1 ? 0 : attempt - 1];
}
