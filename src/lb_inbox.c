/*
 * lb_inbox.c - walua.inbox, for admin scripts (`walua run inbox ...`),
 * never for handlers: read the durable inbox of a database and mark
 * events pending again.  A running daemon picks replayed events up within
 * a second (inbox.c polls the requeue mark).
 *
 * Each function opens the database, does its work and closes it.
 * Expected failures (no database, no such event) return nil, err.
 */
#include "lb.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "db_pg.h"
#include "lb_inbox_pg.h"

static const char *states[] = { "pending", "done", "dead", NULL };

/* Open path, or push nil, err and return NULL. */
static struct db *
open_db(lua_State *L, const char *path, int *nret)
{
	char		 err[512];
	struct db	*d;

	if (!db_is_pg(path) && access(path, F_OK) == -1) {
		lua_pushfstring(L, "no database at '%s'", path);
		*nret = lb_push_error(L, -1, NULL, lua_tostring(L, -1));
		return NULL;
	}
	if ((d = db_open(path, DURABILITY_NORMAL, err, sizeof(err))) == NULL)
		*nret = lb_push_error(L, -1, NULL, err);
	return d;
}

static int
failure(lua_State *L, struct db *d)
{
	lua_pushfstring(L, "inbox: %s", db_error(d));
	db_close(d);
	return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
}

/* Push the row of st (the columns of ROW_COLUMNS) as a table. */
#define ROW_COLUMNS LB_INBOX_COLUMNS

static void
push_row(lua_State *L, sqlite3_stmt *st)
{
	int	i, n = sqlite3_column_count(st);

	lua_createtable(L, 0, n);
	for (i = 0; i < n; i++) {
		const char *name = sqlite3_column_name(st, i);

		switch (sqlite3_column_type(st, i)) {
		case SQLITE_NULL:
			continue;
		case SQLITE_INTEGER:
			if (strcmp(name, "state") == 0) {
				int s = sqlite3_column_int(st, i);
				lua_pushstring(L, s >= 0 && s <= 2 ? states[s] :
				    "?");
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

/* inbox.stats(path) -> { pending, retrying, dead, done, oldest_pending_ms } */
static int
lb_inbox_stats(lua_State *L)
{
	static const char sql[] = DB_INBOX_COUNTS LB_INBOX_KEYS;
	static const char *names[] = { "pending", "retrying", "dead", "done",
	    "oldest_pending_ms", "last_acked_ms", "dedup_keys", NULL };
	const char	*path = luaL_checkstring(L, 1);
	sqlite3_stmt	*st;
	struct db	*d;
	int		 i, n = 0;

	if ((d = open_db(L, path, &n)) == NULL)
		return n;
	if (d->pg != NULL)
		return lbpg_stats(L, d);
	if ((st = db_prepare(d, sql)) == NULL || sqlite3_step(st) != SQLITE_ROW)
		return failure(L, d);
	lua_createtable(L, 0, 7);
	for (i = 0; names[i] != NULL; i++) {
		if (sqlite3_column_type(st, i) == SQLITE_NULL)
			continue;
		lua_pushinteger(L, sqlite3_column_int64(st, i));
		lua_setfield(L, -2, names[i]);
	}
	db_close(d);
	return 1;
}

/* inbox.list(path [, state [, limit]]) -> rows, newest first */
static int
lb_inbox_list(lua_State *L)
{
	static const char *const sqls[] = {
	    "SELECT " ROW_COLUMNS " FROM inbox WHERE " DB_INBOX_PENDING
	    " ORDER BY seq DESC LIMIT ?1",
	    "SELECT " ROW_COLUMNS " FROM inbox WHERE " DB_INBOX_DONE
	    " ORDER BY seq DESC LIMIT ?1",
	    "SELECT " ROW_COLUMNS " FROM inbox WHERE " DB_INBOX_DEAD
	    " ORDER BY seq DESC LIMIT ?1",
	    "SELECT " ROW_COLUMNS " FROM inbox ORDER BY seq DESC LIMIT ?1",
	};
	const char	*path = luaL_checkstring(L, 1);
	int		 state = luaL_checkoption(L, 2, "all", (const char *[]){
			    "pending", "done", "dead", "all", NULL });
	lua_Integer	 limit = luaL_optinteger(L, 3, 50);
	sqlite3_stmt	*st;
	struct db	*d;
	int		 n = 0, rc;

	if ((d = open_db(L, path, &n)) == NULL)
		return n;
	if (d->pg != NULL)
		return lbpg_list(L, d, state, limit);
	if ((st = db_prepare(d, sqls[state])) == NULL)
		return failure(L, d);
	sqlite3_bind_int64(st, 1, limit);
	lua_newtable(L);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		push_row(L, st);
		lua_rawseti(L, -2, ++n);
	}
	if (rc != SQLITE_DONE) {
		lua_pop(L, 1);
		return failure(L, d);
	}
	db_close(d);
	return 1;
}

/*
 * Push the list of the event's sends (walua.whatsapp's journal), in
 * order: { seq, provider, phone, recipient, message_id, error,
 * created_ms, answered_ms }.  0, or -1 on a database error (nothing
 * pushed).  [-0, +1, m]
 */
static int
push_sends(lua_State *L, struct db *d, const char *id)
{
	static const char sql[] = "SELECT seq, provider, phone, recipient,"
	    " message_id, error, created_ms, answered_ms FROM sends"
	    " WHERE event_id = ?1 ORDER BY seq";
	static const char *const names[] = { "seq", "provider", "phone",
	    "recipient", "message_id", "error", "created_ms", "answered_ms" };
	sqlite3_stmt	*st;
	int		 rc, i, n = 0;

	if ((st = db_prepare(d, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	lua_newtable(L);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		lua_createtable(L, 0, 8);
		for (i = 0; i < 8; i++) {
			switch (sqlite3_column_type(st, i)) {
			case SQLITE_NULL:
				continue;
			case SQLITE_INTEGER:
				lua_pushinteger(L, sqlite3_column_int64(st, i));
				break;
			default:
				lua_pushstring(L, (const char *)
				    sqlite3_column_text(st, i));
			}
			lua_setfield(L, -2, names[i]);
		}
		lua_rawseti(L, -2, ++n);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		lua_pop(L, 1);
		return -1;
	}
	return 0;
}

/* inbox.show(path, id) -> row with body and sends | nil, err */
static int
lb_inbox_show(lua_State *L)
{
	static const char sql[] = "SELECT " ROW_COLUMNS ", body FROM inbox"
	    " WHERE id = ?1";
	const char	*path = luaL_checkstring(L, 1);
	const char	*id = luaL_checkstring(L, 2);
	sqlite3_stmt	*st;
	struct db	*d;
	int		 n = 0, rc;

	if ((d = open_db(L, path, &n)) == NULL)
		return n;
	if (d->pg != NULL) {
		if ((n = lbpg_show(L, d, id)) != 1)
			return n;
		lua_getfield(L, -1, "body");	/* may raise: nothing is open */
		lb_json_event_text(L);
		lua_setfield(L, -2, "body");
		return 1;
	}
	if ((st = db_prepare(d, sql)) == NULL)
		return failure(L, d);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		push_row(L, st);
		sqlite3_reset(st);
		if (push_sends(L, d, id) == -1) {
			lua_pop(L, 1);
			return failure(L, d);
		}
		lua_setfield(L, -2, "sends");
		db_close(d);
		lua_getfield(L, -1, "body");	/* may raise: nothing is open */
		lb_json_event_text(L);
		lua_setfield(L, -2, "body");
		return 1;
	}
	if (rc != SQLITE_DONE)
		return failure(L, d);
	db_close(d);
	lua_pushfstring(L, "no event '%s'", id);
	return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
}

/*
 * inbox.replay(path, id [, resend]) -> true | nil, err: a done or dead
 * event becomes pending again, with its attempts reset; the running
 * daemon takes it.  Its sends answered with a message id are not made
 * again, unless resend: its journal is forgotten then, in the same
 * transaction, so the daemon never runs the event with the old journal.
 */
static int
lb_inbox_replay(lua_State *L)
{
	/* done: a row of done (db.c), gone with the replay */
	static const char sql[] = "UPDATE events SET state = 0, attempts = 0,"
	    " due_ms = NULL, requeue = 1 WHERE id = ?1 AND (state != 0 OR"
	    " EXISTS (SELECT 1 FROM done WHERE done.seq = events.seq))";
	static const char undone[] = "DELETE FROM done WHERE seq ="
	    " (SELECT seq FROM events WHERE id = ?1)";
	static const char exists[] = "SELECT state FROM events WHERE id = ?1";
	static const char forget[] = "DELETE FROM sends WHERE event_id = ?1";
	const char	*path = luaL_checkstring(L, 1);
	const char	*id = luaL_checkstring(L, 2);
	int		 resend = lua_toboolean(L, 3);
	sqlite3_stmt	*st;
	struct db	*d;
	int		 n = 0, rc;

	if ((d = open_db(L, path, &n)) == NULL)
		return n;
	if (d->pg != NULL)
		return lbpg_replay(L, d, id, resend);
	if (db_exec(d, "BEGIN IMMEDIATE") == -1)
		return failure(L, d);
	if ((st = db_prepare(d, sql)) == NULL)
		return failure(L, d);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) != SQLITE_DONE)
		return failure(L, d);
	if (sqlite3_changes(d->h) == 1) {
		if ((st = db_prepare(d, undone)) == NULL)
			return failure(L, d);
		sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
		if (sqlite3_step(st) != SQLITE_DONE ||
		    db_exec(d, DB_LOWER_PENDING_FROM) == -1)
			return failure(L, d);
		if (resend) {
			if ((st = db_prepare(d, forget)) == NULL)
				return failure(L, d);
			sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
			if (sqlite3_step(st) != SQLITE_DONE)
				return failure(L, d);
		}
		if (db_exec(d, "COMMIT") == -1)
			return failure(L, d);
		db_close(d);
		lua_pushboolean(L, 1);
		return 1;
	}
	if (db_exec(d, "ROLLBACK") == -1)
		return failure(L, d);
	if ((st = db_prepare(d, exists)) == NULL)
		return failure(L, d);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	db_close(d);
	if (rc == SQLITE_ROW)
		lua_pushfstring(L, "event '%s' is already pending", id);
	else
		lua_pushfstring(L, "no event '%s'", id);
	return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
}

/* inbox.replay_dead(path) -> the number of dead events made pending */
static int
lb_inbox_replay_dead(lua_State *L)
{
	static const char sql[] = "UPDATE events SET state = 0, attempts = 0,"
	    " due_ms = NULL, requeue = 1 WHERE state = 2";
	const char	*path = luaL_checkstring(L, 1);
	sqlite3_stmt	*st;
	struct db	*d;
	int		 n = 0;

	if ((d = open_db(L, path, &n)) == NULL)
		return n;
	if (d->pg != NULL)
		return lbpg_replay_dead(L, d);
	if (db_exec(d, "BEGIN IMMEDIATE") == -1 ||
	    (st = db_prepare(d, sql)) == NULL || sqlite3_step(st) != SQLITE_DONE)
		return failure(L, d);
	n = sqlite3_changes(d->h);
	if (db_exec(d, DB_LOWER_PENDING_FROM) == -1 ||
	    db_exec(d, "COMMIT") == -1)
		return failure(L, d);
	lua_pushinteger(L, n);
	db_close(d);
	return 1;
}

/*
 * inbox.backup(path, to) -> bytes written: a consistent copy of the
 * database by SQLite's online backup API, while walua goes on writing
 * (a step copies BACKUP_PAGES pages; a write between steps restarts it,
 * so a busy inbox is copied in one step at the end).  to must not exist.
 */
#define BACKUP_PAGES	1024

static int
lb_inbox_backup(lua_State *L)
{
	const char	*path = luaL_checkstring(L, 1);
	const char	*to = luaL_checkstring(L, 2);
	sqlite3		*out = NULL;
	sqlite3_backup	*b;
	struct db	*d;
	struct stat	 sb;
	int		 n = 0, rc, tries = 0;

	if (db_is_pg(path)) {
		lua_pushstring(L, "backup is for SQLite: back a PostgreSQL "
		    "database up with pg_dump");
		return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
	}
	if (access(to, F_OK) == 0) {
		lua_pushfstring(L, "'%s' exists: give a new path", to);
		return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
	}
	if ((d = open_db(L, path, &n)) == NULL)
		return n;
	if (sqlite3_open_v2(to, &out, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
		lua_pushfstring(L, "cannot create '%s': %s", to,
		    out ? sqlite3_errmsg(out) : "out of memory");
		sqlite3_close(out);
		db_close(d);
		return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
	}
	if ((b = sqlite3_backup_init(out, "main", d->h, "main")) == NULL) {
		lua_pushfstring(L, "backup: %s", sqlite3_errmsg(out));
		sqlite3_close(out);
		db_close(d);
		return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
	}
	do {
		rc = sqlite3_backup_step(b, tries < 100 ? BACKUP_PAGES : -1);
		if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
			sqlite3_sleep(10);
		tries++;
	} while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
	sqlite3_backup_finish(b);
	if (rc != SQLITE_DONE) {
		lua_pushfstring(L, "backup: %s", sqlite3_errstr(rc));
		sqlite3_close(out);
		unlink(to);
		db_close(d);
		return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
	}
	rc = sqlite3_close(out);
	db_close(d);
	if (rc != SQLITE_OK) {
		lua_pushfstring(L, "backup: closing '%s' failed", to);
		return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
	}
	if (stat(to, &sb) == -1) {
		lua_pushfstring(L, "backup: '%s': %s", to, strerror(errno));
		return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
	}
	lua_pushinteger(L, (lua_Integer)sb.st_size);
	return 1;
}

static const luaL_Reg inbox_funcs[] = {
	{ "stats",	 lb_inbox_stats },
	{ "list",	 lb_inbox_list },
	{ "show",	 lb_inbox_show },
	{ "replay",	 lb_inbox_replay },
	{ "replay_dead", lb_inbox_replay_dead },
	{ "backup",	 lb_inbox_backup },
	{ NULL,		 NULL }
};

int
luaopen_walua_inbox(lua_State *L)
{
	luaL_newlib(L, inbox_funcs);
	return 1;
}
