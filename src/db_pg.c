/*
 * db_pg.c - walua's database on PostgreSQL, for several walua instances
 * sharing one inbox (README, "Running several instances").
 *
 * The tables are SQLite's (db.c) in PostgreSQL's types, plus what several
 * instances need (inbox_pg.c): instances (each running walua, alive
 * until expires_ms), leases (which instance handles a conversation) and
 * events.owner (which instance has an event in its queue).  Times are
 * wall-clock ms as in SQLite, except instance expiries, which are taken
 * from the database's clock so that instances with skewed clocks agree.
 *
 * Statements are prepared once per connection, named after their slot in
 * the cache (sql texts are string literals, compared by address, as in
 * db.c); a reconnect forgets them.  durability maps to
 * synchronous_commit: off to off, normal and full to on (PostgreSQL has
 * no level between "the WAL is flushed" and "not waited for").
 */
#include "db_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"

#define SCHEMA_LOCK	7215301		/* advisory lock: one migrates */
#define RECONNECT_MS	500
#define SCHEMA_VERSION	1		/* meta's schema_version, written last */

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);"
	"CREATE TABLE IF NOT EXISTS events ("
	"  seq BIGSERIAL PRIMARY KEY,"
	"  id TEXT NOT NULL UNIQUE,"
	"  provider TEXT NOT NULL, endpoint TEXT, kind TEXT NOT NULL,"
	"  conversation TEXT, message_id TEXT, status TEXT,"
	"  dedup TEXT UNIQUE, dedup2 TEXT UNIQUE,"
	"  body BYTEA NOT NULL,"
	"  state SMALLINT NOT NULL DEFAULT 0,"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  due_ms BIGINT, last_error TEXT,"
	"  requeue SMALLINT NOT NULL DEFAULT 0,"
	"  acked_ms BIGINT NOT NULL, done_ms BIGINT,"
	"  owner TEXT);"
	"CREATE INDEX IF NOT EXISTS events_pending ON events(conversation, seq)"
	"  WHERE state = 0;"
	"CREATE INDEX IF NOT EXISTS events_dead ON events(seq) WHERE state = 2;"
	"CREATE INDEX IF NOT EXISTS events_requeue ON events(seq)"
	"  WHERE requeue = 1;"
	"CREATE INDEX IF NOT EXISTS events_done ON events(done_ms)"
	"  WHERE state = 1;"
	"CREATE INDEX IF NOT EXISTS events_unowned ON events(seq)"
	"  WHERE state = 0 AND owner IS NULL;"
	"CREATE INDEX IF NOT EXISTS events_owner ON events(owner)"
	"  WHERE state = 0;"
	"CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY,"
	"  expires_ms BIGINT NOT NULL, node TEXT, pid INTEGER);"
	"CREATE TABLE IF NOT EXISTS leases (conversation TEXT PRIMARY KEY,"
	"  owner TEXT NOT NULL);"
	"CREATE INDEX IF NOT EXISTS leases_owner ON leases(owner);"
	"CREATE TABLE IF NOT EXISTS statuses (message_id TEXT PRIMARY KEY,"
	"  rank INTEGER NOT NULL, updated_ms BIGINT NOT NULL);"
	"CREATE INDEX IF NOT EXISTS statuses_age ON statuses(updated_ms);"
	"CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY,"
	"  value TEXT NOT NULL, expires_ms BIGINT);"
	"CREATE TABLE IF NOT EXISTS oauth_tokens (hash TEXT PRIMARY KEY,"
	"  client_id TEXT NOT NULL, scope TEXT, expires_ms BIGINT NOT NULL,"
	"  secret_fp TEXT);"
	"CREATE TABLE IF NOT EXISTS sends (event_id TEXT NOT NULL,"
	"  seq INTEGER NOT NULL, provider TEXT NOT NULL, phone TEXT,"
	"  recipient TEXT, message_id TEXT, error TEXT,"
	"  created_ms BIGINT NOT NULL, answered_ms BIGINT,"
	"  PRIMARY KEY (event_id, seq));"
	"CREATE INDEX IF NOT EXISTS sends_age ON sends(created_ms);"
	"CREATE TABLE IF NOT EXISTS attempts (event_id TEXT NOT NULL,"
	"  attempt INTEGER NOT NULL, error TEXT, ms BIGINT NOT NULL);"
	"CREATE INDEX IF NOT EXISTS attempts_event ON attempts(event_id);"
	"CREATE INDEX IF NOT EXISTS attempts_age ON attempts(ms);"
	/* SQLite's instr(), for queries written once for both */
	"CREATE OR REPLACE FUNCTION instr(text, text) RETURNS integer"
	"  AS 'SELECT strpos($1, $2)' LANGUAGE sql IMMUTABLE;"
	"INSERT INTO meta VALUES ('schema_version', '1')"
	"  ON CONFLICT (key) DO NOTHING;";

int
db_is_pg(const char *database)
{
	return database != NULL && (strncmp(database, "postgresql://", 13) ==
	    0 || strncmp(database, "postgres://", 11) == 0);
}

/* PostgreSQL's message on one line, without its trailing newline. */
static void
set_error(struct db *d, const char *what, const char *msg)
{
	char	*p;

	snprintf(d->err, sizeof(d->err), "%s%s%s", what ? what : "",
	    what ? ": " : "", msg ? msg : "unknown error");
	for (p = d->err; *p != '\0'; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	while (p > d->err && p[-1] == ' ')
		*--p = '\0';
}

/*
 * url with its secrets replaced by xxxxx: the password of its user part
 * and every query value (password=... is one).  libpq's parse errors
 * quote what they cannot read, so they are taken from this copy.
 */
static void
masked_copy(const char *url, char *out, size_t outlen)
{
	const char	*p, *auth, *end, *at = NULL, *colon = NULL;
	size_t		 o = 0;
	int		 in_value = 0;

	auth = (p = strstr(url, "://")) != NULL ? p + 3 : url;
	end = auth + strcspn(auth, "/?");
	for (p = auth; p < end; p++)
		if (*p == '@')
			at = p;
	if (at != NULL)
		colon = memchr(auth, ':', (size_t)(at - auth));
	for (p = url; *p != '\0' && o + 6 < outlen; p++) {
		if (colon != NULL && p > colon && p < at) {
			if (p == colon + 1) {
				memcpy(out + o, "xxxxx", 5);
				o += 5;
			}
			continue;
		}
		if (p > end && *p == '=' && !in_value) {
			in_value = 1;
			memcpy(out + o, "=xxxxx", 6);
			o += 6;
			continue;
		}
		if (in_value && *p != '&')
			continue;
		in_value = 0;
		out[o++] = *p;
	}
	out[o] = '\0';
}

/*
 * Is url a PostgreSQL URL libpq accepts?  err names what is wrong,
 * never the password.
 */
int
pg_check_url(const char *url, char *err, size_t errlen)
{
	PQconninfoOption	*opts;
	char			*msg = NULL, copy[1024], *nl;

	if (pq_load(err, errlen) == -1)
		return -1;
	if ((opts = PQconninfoParse(url, NULL)) != NULL) {
		PQconninfoFree(opts);
		return 0;
	}
	masked_copy(url, copy, sizeof(copy));
	if ((opts = PQconninfoParse(copy, &msg)) != NULL) {
		PQconninfoFree(opts);
		snprintf(err, errlen, "not a PostgreSQL URL: its password or "
		    "a value of its query is malformed (percent-encode it)");
		return -1;
	}
	if (msg != NULL && (nl = strchr(msg, '\n')) != NULL)
		*nl = '\0';
	snprintf(err, errlen, "not a PostgreSQL URL: %s", msg ? msg :
	    "out of memory");
	PQfreemem(msg);
	return -1;
}

static int
connect_db(struct db *d)
{
	static const char *keys[] = { "dbname", "application_name",
	    "connect_timeout", NULL };
	const char	*vals[] = { d->url, "walua", "5", NULL };
	PGresult	*res;
	const char	*sync = d->durability == DURABILITY_OFF ?
			    "SET synchronous_commit = off;"
			    " SET client_min_messages = warning" :
			    "SET synchronous_commit = on;"
			    " SET client_min_messages = warning";
	int		 i;

	for (i = 0; i < DB_CACHE; i++)
		d->cache[i].prepared = 0;
	d->in_tx = 0;
	if (d->pg != NULL)
		PQfinish(d->pg);
	/* dbname expands the URL; the others fill what it leaves unset */
	d->pg = PQconnectdbParams(keys, vals, 1);
	if (d->pg == NULL) {
		set_error(d, NULL, "out of memory");
		return -1;
	}
	if (PQstatus(d->pg) != CONNECTION_OK) {
		set_error(d, NULL, PQerrorMessage(d->pg));
		return -1;
	}
	res = PQexec(d->pg, sync);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		set_error(d, NULL, PQerrorMessage(d->pg));
		PQclear(res);
		return -1;
	}
	PQclear(res);
	return 0;
}

/* The schema version of d's database: 0 when it has none yet, -1. */
static int
schema_version(struct db *d)
{
	PGresult	*res;
	int		 v = -1;

	res = PQexec(d->pg, "SELECT to_regclass('meta') IS NOT NULL");
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		v = strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? 1 : 0;
	PQclear(res);
	if (v != 1)
		return v;
	res = PQexec(d->pg, "SELECT value FROM meta WHERE key ="
	    " 'schema_version'");
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		v = PQntuples(res) > 0 ? atoi(PQgetvalue(res, 0, 0)) : 0;
	else
		v = -1;
	PQclear(res);
	return v;
}

/*
 * Create the tables, once: a database at this version is left alone (its
 * DDL would take locks that a running instance's traffic holds, and
 * every worker opens a connection); else under an advisory lock, so that
 * of several instances starting at once one does, the others then find
 * it done.
 */
static int
make_schema(struct db *d)
{
	PGresult	*res;
	int		 ok, v;
	char		 sql[128];

	if ((v = schema_version(d)) >= SCHEMA_VERSION)
		return 0;
	snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%d)", SCHEMA_LOCK);
	res = PQexec(d->pg, sql);
	ok = PQresultStatus(res) == PGRES_TUPLES_OK;
	PQclear(res);
	if (!ok) {
		set_error(d, NULL, PQerrorMessage(d->pg));
		return -1;
	}
	if ((v = schema_version(d)) < SCHEMA_VERSION) {
		res = PQexec(d->pg, schema);
		ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		if (!ok)
			set_error(d, "schema", PQerrorMessage(d->pg));
		PQclear(res);
	}
	snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%d)",
	    SCHEMA_LOCK);
	PQclear(PQexec(d->pg, sql));
	return ok ? 0 : -1;
}

/*
 * Connect d to url (d is zeroed but for its cache) and make the schema.
 * -1 with the reason in err (libpq's messages name the host and the
 * user, never the password).
 */
int
pg_open(struct db *d, const char *url, int durability, char *err,
    size_t errlen)
{
	char	why[256];

	if (pg_check_url(url, why, sizeof(why)) == -1) {
		snprintf(err, errlen, "database: %s", why);
		return -1;
	}
	d->durability = durability;
	if ((d->url = strdup(url)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (connect_db(d) == -1 || make_schema(d) == -1) {
		snprintf(err, errlen, "database: %s", d->err);
		return -1;
	}
	return 0;
}

void
pg_close(struct db *d)
{
	if (d->pg != NULL)
		PQfinish(d->pg);
	d->pg = NULL;
	free(d->url);
	d->url = NULL;
}

int
pg_alive(struct db *d)
{
	return d->pg != NULL && PQstatus(d->pg) == CONNECTION_OK;
}

/* Connect again (the caller backs off between tries).  0 or -1. */
int
pg_reconnect(struct db *d)
{
	return connect_db(d);
}

const char *
pg_error(struct db *d)
{
	return d->err;
}

/*
 * Run sql (a string literal) with n parameters, preparing it on first
 * use on this connection.  lengths and formats may be NULL (all text).
 * The result, or NULL with pg_error set (the caller PQclear()s).
 */
PGresult *
pg_run(struct db *d, const char *sql, int n, const char *const *values,
    const int *lengths, const int *formats)
{
	PGresult	*res;
	ExecStatusType	 st;
	char		 name[16];
	int		 i;

	if (strcmp(sql, "COMMIT") == 0 || strcmp(sql, "ROLLBACK") == 0)
		d->in_tx = 0;
	if (d->pg == NULL || PQstatus(d->pg) != CONNECTION_OK) {
		/*
		 * Connect again, but never inside a transaction (its
		 * statements would run outside it), and at most every
		 * RECONNECT_MS (a store call while the database is down
		 * fails fast).
		 */
		if (d->in_tx || db_now_ms() < d->retry_ms) {
			set_error(d, NULL, "no connection to the database");
			return NULL;
		}
		d->retry_ms = db_now_ms() + RECONNECT_MS;
		if (connect_db(d) == -1)
			return NULL;
	}
	if (strcmp(sql, "BEGIN") == 0)
		d->in_tx = 1;
	for (i = 0; i < DB_CACHE && d->cache[i].sql != NULL &&
	    d->cache[i].sql != sql; i++)
		;
	if (i == DB_CACHE) {
		/* the cache is sized for walua's statements: run unprepared */
		res = PQexecParams(d->pg, sql, n, NULL, values, lengths,
		    formats, 0);
		goto out;
	}
	snprintf(name, sizeof(name), "s%d", i);
	if (d->cache[i].sql == NULL || !d->cache[i].prepared) {
		res = PQprepare(d->pg, name, sql, n, NULL);
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			set_error(d, NULL, PQerrorMessage(d->pg));
			PQclear(res);
			return NULL;
		}
		PQclear(res);
		d->cache[i].sql = sql;
		d->cache[i].prepared = 1;
	}
	res = PQexecPrepared(d->pg, name, n, values, lengths, formats, 0);
out:
	st = PQresultStatus(res);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		set_error(d, NULL, PQerrorMessage(d->pg));
		PQclear(res);
		return NULL;
	}
	return res;
}

/* Run a statement without results: the rows it touched, or -1. */
long
pg_cmd(struct db *d, const char *sql, int n, const char *const *values)
{
	PGresult	*res;
	long		 rows;

	if ((res = pg_run(d, sql, n, values, NULL, NULL)) == NULL)
		return -1;
	rows = atol(PQcmdTuples(res));
	PQclear(res);
	return rows;
}
