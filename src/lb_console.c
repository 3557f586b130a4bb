/*
 * lb_console.c - the Lua state the console's pages are rendered in
 * (lua/walua/console.lua), and what it reads: the inbox through a
 * read-only SQLite connection of its own (WAL lets it read beside the
 * writer) or a PostgreSQL connection, the supervisor's numbers, the
 * per-minute counts.  Replays go
 * through walua.inbox (lb_inbox.c), as `walua run inbox replay` does.
 *
 * One state for the whole daemon, used under a mutex: the console is
 * for a few operators, and its pages are quick.  No user Lua runs in it;
 * what it renders (event bodies) is data, HTML-escaped by console.lua.
 */
#include "console_lua.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "mhd.h"
#include <sqlite3.h>

#include "config.h"
#include "db.h"
#include "db_pg.h"
#include "inbox.h"
#include "lb.h"
#include "lb_inbox_pg.h"
#include "log.h"
#include "luasrc.h"
#include "minutes.h"
#include "pool.h"
#include "queue.h"

static pthread_mutex_t	 mu = PTHREAD_MUTEX_INITIALIZER;
static lua_State	*LS;
static sqlite3		*ro;			/* read-only, LS's */
static struct db	*pgro;			/* or PostgreSQL's */

static const char *states[] = { "pending", "done", "dead" };

/* The read-only connection to path; NULL with an error raised. */
static sqlite3 *
conn(lua_State *L)
{
	const char	*path;

	if (ro != NULL)
		return ro;
	lua_getfield(L, LUA_REGISTRYINDEX, "walua.console.db");
	path = lua_tostring(L, -1);
	lua_pop(L, 1);
	if (path == NULL)
		luaL_error(L, "no database");
	if (db_is_pg(path))
		return NULL;			/* see pg_conn */
	if (sqlite3_open_v2(path, &ro, SQLITE_OPEN_READONLY |
	    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		lua_pushfstring(L, "cannot open database '%s': %s", path,
		    ro ? sqlite3_errmsg(ro) : "out of memory");
		sqlite3_close(ro);
		ro = NULL;
		lua_error(L);
	}
	sqlite3_busy_timeout(ro, 2000);
	return ro;
}

/* The PostgreSQL connection, when the database is one; else NULL. */
static struct db *
pg_conn(lua_State *L)
{
	const char	*path;
	char		 err[512];

	if (pgro != NULL && !pg_alive(pgro)) {
		db_close(pgro);			/* lost: made again below */
		pgro = NULL;
	}
	if (pgro != NULL || ro != NULL)
		return pgro;
	lua_getfield(L, LUA_REGISTRYINDEX, "walua.console.db");
	path = lua_tostring(L, -1);
	lua_pop(L, 1);
	if (path == NULL || !db_is_pg(path))
		return NULL;
	if ((pgro = db_open(path, DURABILITY_NORMAL, err, sizeof(err))) ==
	    NULL)
		luaL_error(L, "%s", err);
	return pgro;
}

/* A statement for sql, finalized by the caller; raises on error. */
static sqlite3_stmt *
prepare(lua_State *L, const char *sql)
{
	sqlite3		*h = conn(L);
	sqlite3_stmt	*st;

	if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
		luaL_error(L, "database: %s", sqlite3_errmsg(h));
	return st;
}

/* Push the current row of st as a table of its columns.  [-0, +1, m] */
static void
push_row(lua_State *L, sqlite3_stmt *st)
{
	int	i, n = sqlite3_column_count(st), s;

	lua_createtable(L, 0, n);
	for (i = 0; i < n; i++) {
		const char *name = sqlite3_column_name(st, i);

		switch (sqlite3_column_type(st, i)) {
		case SQLITE_NULL:
			continue;
		case SQLITE_INTEGER:
			if (strcmp(name, "state") == 0) {
				s = sqlite3_column_int(st, i);
				lua_pushstring(L, s >= 0 && s <= 2 ?
				    states[s] : "?");
			} else
				lua_pushinteger(L, sqlite3_column_int64(st, i));
			break;
		default:
			lua_pushlstring(L, (const char *)sqlite3_column_text(st,
			    i), (size_t)sqlite3_column_bytes(st, i));
		}
		lua_setfield(L, -2, name);
	}
}

/*
 * Push every row of st (finalized here) as a list; raises on error.
 * [-0, +1, m]
 */
static void
push_rows(lua_State *L, sqlite3_stmt *st)
{
	int	rc, n = 0;

	lua_newtable(L);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		push_row(L, st);
		lua_rawseti(L, -2, ++n);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		luaL_error(L, "database: %s", sqlite3_errmsg(ro));
}

/* A query's parameter: an integer, or a string (NULL: SQL NULL). */
struct qarg {
	int		 is_int;
	lua_Integer	 i;
	const char	*s;
};

/*
 * Run sql (SQLite's ?N and ? placeholders) with its n arguments and push
 * the rows as a list; raises on error.  On PostgreSQL the placeholders
 * become $N, the integers text.  [-0, +1, e]
 */
static void
query(lua_State *L, const char *sql, int n, const struct qarg *a)
{
	struct db	*d = pg_conn(L);
	sqlite3_stmt	*st;
	PGresult	*res;
	char		 pgsql[2048], ints[8][24], *end;
	const char	*v[8], *p;
	size_t		 o = 0;
	int		 i, k = 0;

	if (d == NULL) {
		st = prepare(L, sql);
		for (i = 0; i < n; i++)
			if (a[i].is_int)
				sqlite3_bind_int64(st, i + 1, a[i].i);
			else
				sqlite3_bind_text(st, i + 1, a[i].s, -1,
				    SQLITE_TRANSIENT);
		push_rows(L, st);
		return;
	}
	if (n > 8)
		luaL_error(L, "console: too many parameters");
	for (p = sql; *p != '\0' && o + 8 < sizeof(pgsql); p++) {
		if (*p != '?') {
			pgsql[o++] = *p;
			continue;
		}
		if (p[1] >= '0' && p[1] <= '9') {
			k = (int)strtol(p + 1, &end, 10);
			p = end - 1;
		} else
			k++;
		o += (size_t)snprintf(pgsql + o, sizeof(pgsql) - o, "$%d", k);
	}
	pgsql[o] = '\0';
	for (i = 0; i < n; i++) {
		if (a[i].is_int) {
			snprintf(ints[i], sizeof(ints[i]), "%lld",
			    (long long)a[i].i);
			v[i] = ints[i];
		} else
			v[i] = a[i].s;
	}
	res = PQexecParams(d->pg, pgsql, n, NULL, v, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		lua_pushfstring(L, "database: %s", PQerrorMessage(d->pg));
		PQclear(res);
		lua_error(L);
	}
	lbpg_push_rows(L, res);
	PQclear(res);
}

/* stats() -> the counts of `walua run inbox stats` */
static int
l_stats(lua_State *L)
{
	query(L, pg_conn(L) != NULL ? LB_INBOX_COUNTS : DB_INBOX_COUNTS, 0,
	    NULL);
	lua_rawgeti(L, -1, 1);
	return 1;
}

#define ROW_COLUMNS "seq, id, provider, endpoint, kind, conversation," \
	" message_id, status, state, attempts, due_ms, last_error, acked_ms," \
	" done_ms"

/*
 * list{ state, provider, kind, conversation, q, before, limit } -> rows,
 * newest first.  state: pending, retrying, done, dead (nil: all); q: a
 * part of the message id; before: a seq, for the next page.
 */
static int
l_list(lua_State *L)
{
	static const char *const where[] = { "provider = ?", "kind = ?",
	    "conversation = ?", "instr(message_id, ?) > 0" };
	static const char *const keys[] = { "provider", "kind",
	    "conversation", "q" };
	char		 sql[1024];
	const char	*state, *v[4];
	struct qarg	 a[6];
	lua_Integer	 before, limit;
	size_t		 i;
	int		 k = 1, pg;

	luaL_checktype(L, 1, LUA_TTABLE);
	lua_getfield(L, 1, "state");
	state = lua_tostring(L, -1);
	lua_getfield(L, 1, "before");
	before = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
	lua_getfield(L, 1, "limit");
	limit = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 50;
	lua_pop(L, 3);
	/* SQLite: the view of db.c, where a done mark is a row of its own */
	pg = pg_conn(L) != NULL;
	snprintf(sql, sizeof(sql), "SELECT " ROW_COLUMNS " FROM %s WHERE"
	    " seq < ?1%s%s", pg ? "events" : "inbox", state == NULL ? "" :
	    strcmp(state, "pending") == 0 ||
	    strcmp(state, "retrying") == 0 ? (pg ? " AND state = 0" :
	    " AND " DB_INBOX_PENDING) :
	    strcmp(state, "done") == 0 ? (pg ? " AND state = 1" :
	    " AND " DB_INBOX_DONE) :
	    strcmp(state, "dead") == 0 ? (pg ? " AND state = 2" :
	    " AND " DB_INBOX_DEAD) : " AND 1 = 0",
	    state != NULL && strcmp(state, "retrying") == 0 ?
	    " AND due_ms IS NOT NULL" : "");
	for (i = 0; i < 4; i++) {
		lua_getfield(L, 1, keys[i]);
		v[i] = lua_tostring(L, -1);	/* kept on the stack */
		if (v[i] != NULL && v[i][0] != '\0') {
			strcat(sql, " AND ");
			strcat(sql, where[i]);
		} else
			v[i] = NULL;
	}
	strcat(sql, " ORDER BY seq DESC LIMIT ?");
	memset(a, 0, sizeof(a));
	a[0].is_int = 1;
	a[0].i = before > 0 ? before : INT64_MAX;
	for (i = 0; i < 4; i++)
		if (v[i] != NULL)
			a[k++].s = v[i];
	a[k].is_int = 1;
	a[k++].i = limit < 1 ? 1 : limit > 500 ? 500 : limit;
	query(L, sql, k, a);
	return 1;
}

/* show(id) -> row with body (JSON text), sends, failed_attempts | nil */
static int
l_show(lua_State *L)
{
	struct qarg	 a = { 0, 0, luaL_checkstring(L, 1) };

	query(L, pg_conn(L) != NULL ? "SELECT " ROW_COLUMNS ", body FROM"
	    " events WHERE id = ?1" : "SELECT " ROW_COLUMNS ", body FROM inbox"
	    " WHERE id = ?1", 1, &a);
	if (lua_rawgeti(L, -1, 1) != LUA_TTABLE)
		return 1;			/* nil: no such event */
	lua_getfield(L, -1, "body");
	lb_json_event_text(L);			/* packed -> JSON text */
	lua_setfield(L, -2, "body");
	query(L, "SELECT seq, provider, phone, recipient, message_id, error,"
	    " created_ms, answered_ms FROM sends WHERE event_id = ?1"
	    " ORDER BY seq", 1, &a);
	lua_setfield(L, -2, "sends");
	query(L, "SELECT attempt, error, ms FROM attempts WHERE"
	    " event_id = ?1 ORDER BY attempt, ms", 1, &a);
	lua_setfield(L, -2, "failed_attempts");
	return 1;
}

static void
set_int(lua_State *L, const char *k, lua_Integer v)
{
	lua_pushinteger(L, v);
	lua_setfield(L, -2, k);
}

/* runtime() -> what the running daemon knows: queue, workers, reloads */
static int
l_runtime(lua_State *L)
{
	struct queue_stats	qs;
	struct reload_info	ri;
	long			m[MINUTES_SERIES][MINUTES];
	int64_t			first;
	int			s, i;

	queue_stats(&qs);
	pool_last_reload(&ri);
	minutes_get(&first, m);
	lua_newtable(L);
	set_int(L, "inflight", qs.inflight);
	set_int(L, "waiting", qs.waiting);
	set_int(L, "retrying", qs.retrying);
	set_int(L, "workers", pool_workers());
	set_int(L, "generation", pool_generation());
	set_int(L, "unmarked", inbox_unmarked());
	lua_pushstring(L, inbox_healthy() ? "ok" : "unavailable");
	lua_setfield(L, -2, "database");
	if (ri.ms > 0) {
		lua_createtable(L, 0, 3);
		set_int(L, "ms", ri.ms);
		lua_pushboolean(L, ri.ok);
		lua_setfield(L, -2, "ok");
		if (ri.error[0] != '\0') {
			lua_pushstring(L, ri.error);
			lua_setfield(L, -2, "error");
		}
		lua_setfield(L, -2, "reload");
	}
	set_int(L, "first_minute", first);
	for (s = 0; s < MINUTES_SERIES; s++) {
		lua_createtable(L, MINUTES, 0);
		for (i = 0; i < MINUTES; i++) {
			lua_pushinteger(L, m[s][i]);
			lua_rawseti(L, -2, i + 1);
		}
		lua_setfield(L, -2, s == MINUTES_ACKED ? "acked" : "handled");
	}
	return 1;
}

/*
 * log(level, msg, key, value, ...): a log line, for the console's
 * actions (level: 0 debug .. 3 error; at most 8 pairs).
 */
static int
l_log(lua_State *L)
{
	const char	*kv[17];
	int		 level = (int)luaL_checkinteger(L, 1);
	const char	*msg = luaL_checkstring(L, 2);
	int		 n = lua_gettop(L) - 2, i;

	if (n > 16)
		n = 16;
	for (i = 0; i < 17; i++)	/* strings kept on the stack */
		kv[i] = i < n ? luaL_tolstring(L, i + 3, NULL) : NULL;
	log_kv(level < LOG_DEBUG || level > LOG_ERROR ? LOG_INFO : level, msg,
	    kv[0], kv[1], kv[2], kv[3], kv[4], kv[5], kv[6], kv[7], kv[8],
	    kv[9], kv[10], kv[11], kv[12], kv[13], kv[14], kv[15], NULL);
	return 0;
}

static const luaL_Reg funcs[] = {
	{ "stats",	l_stats },
	{ "list",	l_list },
	{ "show",	l_show },
	{ "runtime",	l_runtime },
	{ "log",	l_log },
	{ NULL,		NULL }
};

/* The state, made once: walua.console's handle() in the registry. */
static int
setup(lua_State *L)
{
	luaL_openlibs(L);
	if (luasrc_load(L, "walua.console") != LUA_OK)
		return lua_error(L);
	luaL_newlib(L, funcs);
	lb_json_open_cjson(L);
	lua_setfield(L, -2, "json");
	luaopen_walua_inbox(L);
	lua_setfield(L, -2, "inbox");
	lua_call(L, 1, 1);			/* the module: handle */
	lua_setfield(L, LUA_REGISTRYINDEX, "walua.console");
	return 0;
}

static enum MHD_Result
push_arg(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
	lua_State	*L = cls;

	(void)kind;
	lua_pushstring(L, value != NULL ? value : "");
	lua_setfield(L, -2, key);
	return MHD_YES;
}

static void
set_str(lua_State *L, const char *k, const char *v)
{
	if (v == NULL)
		return;
	lua_pushstring(L, v);
	lua_setfield(L, -2, k);
}

/* handle(req) -> status, type, body [, location]; under lua_pcall */
static int
call(lua_State *L)
{
	const struct console_req *rq = lua_touserdata(L, 1);
	struct console_resp	 *rs = lua_touserdata(L, 2);
	const char		 *s;
	size_t			  len;

	lua_getfield(L, LUA_REGISTRYINDEX, "walua.console");
	lua_createtable(L, 0, 10);
	set_str(L, "method", rq->method);
	set_str(L, "path", rq->path);
	set_str(L, "base", rq->cfg->console_path);
	set_str(L, "user", rq->user);
	set_str(L, "csrf", rq->csrf);
	set_str(L, "message", rq->message);
	set_str(L, "database", rq->cfg->database);
	if (rq->form != NULL) {
		lua_pushlstring(L, rq->form, rq->formlen);
		lua_setfield(L, -2, "form");
	}
	lua_newtable(L);
	if (rq->conn != NULL)
		MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND,
		    push_arg, L);
	lua_setfield(L, -2, "query");
	lua_call(L, 1, 4);
	rs->status = (int)luaL_checkinteger(L, -4);
	snprintf(rs->type, sizeof(rs->type), "%s", luaL_checkstring(L, -3));
	s = luaL_checklstring(L, -2, &len);
	if (buf_append(&rs->body, s, len) == -1)
		return luaL_error(L, "out of memory");
	snprintf(rs->location, sizeof(rs->location), "%s",
	    lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
	return 0;
}

/*
 * Render req's page into resp.  Returns 0, or -1 (logged): answer 500.
 */
int
console_lua(const struct console_req *req, struct console_resp *resp)
{
	int	rc = 0;

	memset(resp, 0, sizeof(*resp));
	pthread_mutex_lock(&mu);
	if (LS == NULL) {
		if ((LS = luaL_newstate()) == NULL) {
			pthread_mutex_unlock(&mu);
			log_msg(LOG_ERROR, "console: out of memory");
			return -1;
		}
		lua_pushstring(LS, req->cfg->database);
		lua_setfield(LS, LUA_REGISTRYINDEX, "walua.console.db");
		lua_pushcfunction(LS, setup);
		if (lua_pcall(LS, 0, 0, 0) != LUA_OK) {
			log_kv(LOG_ERROR, "console: cannot load its pages",
			    "error", lua_tostring(LS, -1), NULL);
			lua_close(LS);
			LS = NULL;
			pthread_mutex_unlock(&mu);
			return -1;
		}
	}
	lua_pushcfunction(LS, call);
	lua_pushlightuserdata(LS, (void *)(uintptr_t)req);
	lua_pushlightuserdata(LS, resp);
	if (lua_pcall(LS, 2, 0, 0) != LUA_OK) {
		log_kv(LOG_ERROR, "console: page failed", "path", req->path,
		    "error", lua_tostring(LS, -1), NULL);
		lua_pop(LS, 1);
		buf_free(&resp->body);
		rc = -1;
	}
	lua_settop(LS, 0);
	lua_gc(LS, LUA_GCSTEP, 0);
	pthread_mutex_unlock(&mu);
	return rc;
}

/* At the stop: close the state and its connection. */
void
console_lua_free(void)
{
	pthread_mutex_lock(&mu);
	if (LS != NULL)
		lua_close(LS);
	LS = NULL;
	if (ro != NULL)
		sqlite3_close(ro);
	ro = NULL;
	db_close(pgro);
	pgro = NULL;
	pthread_mutex_unlock(&mu);
}
