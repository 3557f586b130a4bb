/*
 * lb_inbox_pg.c - walua.inbox (lb_inbox.c) on a PostgreSQL database: the
 * same queries and the same Lua values.  A replayed event also loses its
 * owner, so that whichever instance holds its conversation (or any, if
 * none does) claims it (inbox_pg.c).
 */
#include "lb.h"

#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "db_pg.h"
#include "lb_inbox_pg.h"

#define OID_INT2	21
#define OID_INT4	23
#define OID_INT8	20
#define OID_BYTEA	17

static const char *states[] = { "pending", "done", "dead", NULL };

/*
 * Push row i of res as a table, as lb_inbox.c's push_row does: integers
 * as integers, state by name, bytea as its bytes.  [-0, +1, m]
 */
void
lbpg_push_row(lua_State *L, PGresult *res, int i)
{
	int		 c, n = PQnfields(res), s;
	Oid		 t;
	unsigned char	*bytes;
	size_t		 len;

	lua_createtable(L, 0, n);
	for (c = 0; c < n; c++) {
		const char *name = PQfname(res, c), *v;

		if (PQgetisnull(res, i, c))
			continue;
		v = PQgetvalue(res, i, c);
		t = PQftype(res, c);
		if (strcmp(name, "state") == 0) {
			s = atoi(v);
			lua_pushstring(L, s >= 0 && s <= 2 ? states[s] : "?");
		} else if (t == OID_INT2 || t == OID_INT4 || t == OID_INT8)
			lua_pushinteger(L, strtoll(v, NULL, 10));
		else if (t == OID_BYTEA) {
			bytes = PQunescapeBytea((const unsigned char *)v, &len);
			if (bytes == NULL)
				luaL_error(L, "out of memory");
			lua_pushlstring(L, (const char *)bytes, len);
			PQfreemem(bytes);
		} else
			lua_pushstring(L, v);
		lua_setfield(L, -2, name);
	}
}

static int
failure(lua_State *L, struct db *d, PGresult *res)
{
	if (res != NULL)
		PQclear(res);
	lua_pushfstring(L, "inbox: %s", db_error(d));
	db_close(d);
	return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
}

/* Push every row of res, as a list of lbpg_push_row's tables.  [-0, +1, m] */
void
lbpg_push_rows(lua_State *L, PGresult *res)
{
	int	i, n = PQntuples(res);

	lua_createtable(L, n, 0);
	for (i = 0; i < n; i++) {
		lbpg_push_row(L, res, i);
		lua_rawseti(L, -2, i + 1);
	}
}

int
lbpg_stats(lua_State *L, struct db *d)
{
	static const char sql[] = LB_INBOX_COUNTS LB_INBOX_KEYS;
	PGresult	*res;

	if ((res = pg_run(d, sql, 0, NULL, NULL, NULL)) == NULL)
		return failure(L, d, NULL);
	lbpg_push_row(L, res, 0);
	PQclear(res);
	db_close(d);
	return 1;
}

/* state: 0..2, or 3 for all */
int
lbpg_list(lua_State *L, struct db *d, int state, lua_Integer limit)
{
	static const char by_state[] = "SELECT " LB_INBOX_COLUMNS " FROM events"
	    " WHERE state = $1 ORDER BY seq DESC LIMIT $2";
	static const char all[] = "SELECT " LB_INBOX_COLUMNS " FROM events"
	    " ORDER BY seq DESC LIMIT $1";
	char		 s[16], l[32];
	const char	*v[2] = { s, l };
	PGresult	*res;

	snprintf(s, sizeof(s), "%d", state);
	snprintf(l, sizeof(l), "%lld", (long long)limit);
	if (state == 3) {
		v[0] = l;
		res = pg_run(d, all, 1, v, NULL, NULL);
	} else
		res = pg_run(d, by_state, 2, v, NULL, NULL);
	if (res == NULL)
		return failure(L, d, NULL);
	lbpg_push_rows(L, res);
	PQclear(res);
	db_close(d);
	return 1;
}

/* The event's row with its sends, or nil, err; the body still packed. */
int
lbpg_show(lua_State *L, struct db *d, const char *id)
{
	static const char sql[] = "SELECT " LB_INBOX_COLUMNS ", body FROM events"
	    " WHERE id = $1";
	static const char sends[] = "SELECT seq, provider, phone, recipient,"
	    " message_id, error, created_ms, answered_ms FROM sends"
	    " WHERE event_id = $1 ORDER BY seq";
	PGresult	*res, *sr;

	if ((res = pg_run(d, sql, 1, &id, NULL, NULL)) == NULL)
		return failure(L, d, NULL);
	if (PQntuples(res) == 0) {
		PQclear(res);
		db_close(d);
		lua_pushfstring(L, "no event '%s'", id);
		return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
	}
	if ((sr = pg_run(d, sends, 1, &id, NULL, NULL)) == NULL)
		return failure(L, d, res);
	lbpg_push_row(L, res, 0);
	PQclear(res);
	lbpg_push_rows(L, sr);
	PQclear(sr);
	lua_setfield(L, -2, "sends");
	db_close(d);
	return 1;
}

/* As lb_inbox.c's replay, and a notice to the running instances. */
int
lbpg_replay(lua_State *L, struct db *d, const char *id, int resend)
{
	static const char sql[] = "UPDATE events SET state = 0, attempts = 0,"
	    " due_ms = NULL, requeue = 1, owner = NULL WHERE id = $1"
	    " AND state <> 0";
	static const char exists[] = "SELECT state FROM events WHERE id = $1";
	static const char forget[] = "DELETE FROM sends WHERE event_id = $1";
	PGresult	*res;
	long		 n;
	int		 found;

	if (db_exec(d, "BEGIN") == -1)
		return failure(L, d, NULL);
	if ((n = pg_cmd(d, sql, 1, &id)) == -1 ||
	    (n == 1 && resend && pg_cmd(d, forget, 1, &id) == -1)) {
		db_exec(d, "ROLLBACK");
		return failure(L, d, NULL);
	}
	if (n == 1) {
		if (db_exec(d, "NOTIFY walua_events") == -1 ||
		    db_exec(d, "COMMIT") == -1) {
			db_exec(d, "ROLLBACK");
			return failure(L, d, NULL);
		}
		db_close(d);
		lua_pushboolean(L, 1);
		return 1;
	}
	if (db_exec(d, "ROLLBACK") == -1 ||
	    (res = pg_run(d, exists, 1, &id, NULL, NULL)) == NULL)
		return failure(L, d, NULL);
	found = PQntuples(res) > 0;
	PQclear(res);
	db_close(d);
	if (found)
		lua_pushfstring(L, "event '%s' is already pending", id);
	else
		lua_pushfstring(L, "no event '%s'", id);
	return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
}

int
lbpg_replay_dead(lua_State *L, struct db *d)
{
	static const char sql[] = "UPDATE events SET state = 0, attempts = 0,"
	    " due_ms = NULL, requeue = 1, owner = NULL WHERE state = 2";
	long		 n;

	if (db_exec(d, "BEGIN") == -1 || (n = pg_cmd(d, sql, 0, NULL)) == -1 ||
	    db_exec(d, "NOTIFY walua_events") == -1 ||
	    db_exec(d, "COMMIT") == -1) {
		db_exec(d, "ROLLBACK");
		return failure(L, d, NULL);
	}
	db_close(d);
	lua_pushinteger(L, n);
	return 1;
}
