/*
 * lb_store.c - walua.store: durable key/value state for handlers, in the
 * database's kv table (kv.c), shared by every worker and kept across
 * restarts.  Values are strings, numbers, booleans or tables, stored as
 * JSON; ttl_s (optional) makes a value expire.
 *
 * Each worker process opens its own connection on first use (SQLite's
 * WAL lets the workers and the inbox writer work side by side).  A
 * database error is returned as nil, err; bad arguments raise.
 */
#include "lb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"
#include "kv.h"
#include "log.h"

/* Longer TTLs (100 years, in seconds) are no expiry at all. */
#define STORE_TTL_MAX	(100.0 * 365 * 86400)

static struct db	*store_db;
static char		*store_path;
static int		 store_durability = DURABILITY_NORMAL;

/* Set the database walua.store uses in this process (before any call). */
void
lb_store_setup(const char *path, int durability)
{
	free(store_path);
	store_path = path ? strdup(path) : NULL;
	store_durability = durability;
}

void
lb_store_close(void)
{
	db_close(store_db);
	store_db = NULL;
	free(store_path);
	store_path = NULL;
}

/*
 * This worker's connection, opened on first use; NULL when it cannot be
 * opened.  At most synchronous NORMAL: walua.store is a
 * handler's scratch state, not the inbox.
 */
struct db *
lb_store_conn(void)
{
	char	err[512];

	if (store_db != NULL || store_path == NULL)
		return store_db;
	if ((store_db = db_open(store_path, store_durability ==
	    DURABILITY_OFF ? DURABILITY_OFF : DURABILITY_NORMAL, err,
	    sizeof(err))) == NULL)
		log_kv(LOG_ERROR, "worker: cannot open the database", "error",
		    err, NULL);
	return store_db;
}

/* The connection, opened on first use; NULL with an error pushed. */
static struct db *
conn(lua_State *L, int *nret)
{
	char	err[512];

	if (store_path == NULL) {
		*nret = lb_push_error(L, -1, NULL, "store: no database "
		    "configured");
		return NULL;
	}
	if (lb_store_conn() == NULL) {
		snprintf(err, sizeof(err), "store: cannot open the database");
		*nret = lb_push_error(L, -1, NULL, err);
	}
	return store_db;
}

static int
db_failure(lua_State *L, struct db *d)
{
	lua_pushfstring(L, "store: %s", db_error(d));
	return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
}

/* ttl_s at idx: 0 for none, else an absolute expiry in ms.  May raise. */
static int64_t
expiry(lua_State *L, int idx)
{
	lua_Number ttl = luaL_optnumber(L, idx, 0);

	luaL_argcheck(L, ttl == ttl, idx, "ttl must be a number of seconds");
	luaL_argcheck(L, ttl >= 0, idx, "ttl must not be negative");
	/* (int64_t) of a number past its range is undefined: math.huge,
	 * or anything past STORE_TTL_MAX, keeps the value for good */
	if (ttl == 0 || !(ttl <= STORE_TTL_MAX))
		return 0;
	return db_now_ms() + (int64_t)(ttl * 1000);
}

/* store.get(key) -> value | nil */
static int
lb_store_get(lua_State *L)
{
	const char	*key = luaL_checkstring(L, 1);
	struct db	*d;
	char		*v;
	int		 rc, n = 0;

	if ((d = conn(L, &n)) == NULL)
		return n;
	if ((rc = kv_get(d, key, db_now_ms(), &v)) == -1)
		return db_failure(L, d);
	if (rc == 0) {
		lua_pushnil(L);
		return 1;
	}
	lua_pushcfunction(L, lb_json_decode_raise);
	lua_pushstring(L, v);
	free(v);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK)
		return lb_push_error(L, -1, NULL, "store: stored value is "
		    "not valid JSON");
	return 1;
}

/* store.set(key, value [, ttl_s]) -> true */
static int
lb_store_set(lua_State *L)
{
	const char	*key = luaL_checkstring(L, 1);
	int		 t = lua_type(L, 2), n = 0;
	int64_t		 exp = expiry(L, 3);
	struct db	*d;

	luaL_argcheck(L, t == LUA_TSTRING || t == LUA_TNUMBER ||
	    t == LUA_TBOOLEAN || t == LUA_TTABLE, 2,
	    "value must be a string, number, boolean or table (use del)");
	lua_getfield(L, lua_upvalueindex(1), "encode");
	lua_pushvalue(L, 2);
	lua_call(L, 1, 1);		/* raises on a table cjson cannot take */
	if ((d = conn(L, &n)) == NULL)
		return n;
	if (kv_set(d, key, lua_tostring(L, -1), exp) == -1)
		return db_failure(L, d);
	lua_pushboolean(L, 1);
	return 1;
}

/* store.del(key) -> true */
static int
lb_store_del(lua_State *L)
{
	const char	*key = luaL_checkstring(L, 1);
	struct db	*d;
	int		 n = 0;

	if ((d = conn(L, &n)) == NULL)
		return n;
	if (kv_del(d, key) == -1)
		return db_failure(L, d);
	lua_pushboolean(L, 1);
	return 1;
}

/* store.incr(key [, n [, ttl_s]]) -> the new number */
static int
lb_store_incr(lua_State *L)
{
	const char	*key = luaL_checkstring(L, 1);
	lua_Integer	 by = luaL_optinteger(L, 2, 1);
	int64_t		 exp = expiry(L, 3), result = 0;
	struct db	*d;
	int		 n = 0;

	if ((d = conn(L, &n)) == NULL)
		return n;
	if (kv_incr(d, key, by, exp, db_now_ms(), &result) == -1)
		return db_failure(L, d);
	lua_pushinteger(L, result);
	return 1;
}

static const luaL_Reg store_funcs[] = {
	{ "get",	lb_store_get },
	{ "set",	lb_store_set },
	{ "del",	lb_store_del },
	{ "incr",	lb_store_incr },
	{ NULL,		NULL }
};

/* walua.store; upvalue 1 of each function: the private cjson pieces. */
int
luaopen_walua_store(lua_State *L)
{
	luaL_newlibtable(L, store_funcs);
	lb_json_open_cjson(L);
	luaL_setfuncs(L, store_funcs, 1);
	return 1;
}
