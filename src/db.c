/*
 * db.c - opening walua's SQLite database: WAL, the synchronous level that
 * `durability` asks for, a busy timeout, the schema (created or migrated
 * on open), and a small cache of prepared statements per connection.
 *
 * A connection belongs to one thread (the inbox writer, the supervisor's
 * reader, a worker's walua.store, an admin script); SQLite's WAL lets them
 * read while one writes.
 */
#include "db.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "db_pg.h"
#include "walvfs.h"


/*
 * events: the inbox, a row per event written once when it is stored.
 * state 0 pending (or done: see done), 2 dead (1: done by a walua before
 * schema version 4); due_ms is the wall-clock time of a pending retry;
 * requeue marks events an admin replayed, for the running daemon to pick
 * up.  dedup and dedup2 are the
 * event's dedup keys (README, HTTP answers: dedup2 holds Kapso's
 * delivery key, dedup the other one), each unique: the insert of an event
 * is its claim, live until acked_ms plus the dedup window (schema
 * version 3; before, a table of its own held the claims).
 * statuses: the highest status rank handled per message (ev.stale), as
 * a walua before schema version 5 recorded it; now only read, and pruned.
 * From version 5 on, the status events that have their done mark tell
 * it, found by message through events_status (kv.c): handling a status
 * writes nothing more than its done mark.
 * kv: walua.store.  oauth_tokens: issued tokens, by SHA-256, with their
 * client, scopes and the fingerprint of the client's secret (secret_fp,
 * schema version 2; NULL for rows written before it).
 * attempts: each failed attempt of an event (its error and when), for
 * the console; pruned with the events.
 *
 * done (schema version 4): the done mark of an event, a small row of its
 * own, so that handling an event adds 20 bytes instead of rewriting its
 * row and moving it between indexes (a third of the writer's SQLite time
 * per event).  meta's pending_from bounds where pending events may be:
 * every event below it is done or dead, so finding the pending ones is a
 * range of the table's key, not a scan of its history.  The writer raises
 * it as events are handled (inbox.c); a replay lowers it to the replayed
 * event.  inbox is the view the admin tools and the console read: each
 * event with its state, attempts and done_ms as they are.  The newest
 * event is never pruned, so a seq is never given twice.
 */
static const char schema[] =
	"CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)"
	"  WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS events ("
	"  seq INTEGER PRIMARY KEY,"
	"  id TEXT NOT NULL UNIQUE,"
	"  provider TEXT NOT NULL, endpoint TEXT, kind TEXT NOT NULL,"
	"  conversation TEXT, message_id TEXT, status TEXT, dedup TEXT,"
	"  dedup2 TEXT,"
	"  body TEXT NOT NULL,"
	"  state INTEGER NOT NULL DEFAULT 0,"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  due_ms INTEGER, last_error TEXT,"
	"  requeue INTEGER NOT NULL DEFAULT 0,"
	"  acked_ms INTEGER NOT NULL, done_ms INTEGER);"
	"CREATE INDEX IF NOT EXISTS events_dead ON events(seq) WHERE state = 2;"
	"CREATE INDEX IF NOT EXISTS events_requeue ON events(seq)"
	"  WHERE requeue = 1;"
	"CREATE INDEX IF NOT EXISTS events_done ON events(done_ms)"
	"  WHERE state = 1;"
	"CREATE TABLE IF NOT EXISTS statuses (message_id TEXT PRIMARY KEY,"
	"  rank INTEGER NOT NULL, updated_ms INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS statuses_age ON statuses(updated_ms);"
	"CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY,"
	"  value TEXT NOT NULL, expires_ms INTEGER) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS oauth_tokens (hash TEXT PRIMARY KEY,"
	"  client_id TEXT NOT NULL, scope TEXT, expires_ms INTEGER NOT NULL,"
	"  secret_fp TEXT) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS sends (event_id TEXT NOT NULL,"
	"  seq INTEGER NOT NULL, provider TEXT NOT NULL, phone TEXT,"
	"  recipient TEXT, message_id TEXT, error TEXT,"
	"  created_ms INTEGER NOT NULL, answered_ms INTEGER,"
	"  PRIMARY KEY (event_id, seq)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS sends_age ON sends(created_ms);"
	"CREATE TABLE IF NOT EXISTS attempts (event_id TEXT NOT NULL,"
	"  attempt INTEGER NOT NULL, error TEXT, ms INTEGER NOT NULL);"
	"CREATE INDEX IF NOT EXISTS attempts_event ON attempts(event_id);"
	"CREATE INDEX IF NOT EXISTS attempts_age ON attempts(ms);"
	"CREATE TABLE IF NOT EXISTS done (seq INTEGER PRIMARY KEY,"
	"  attempts INTEGER NOT NULL, done_ms INTEGER NOT NULL);"
	"CREATE TRIGGER IF NOT EXISTS events_gone AFTER DELETE ON events"
	"  BEGIN DELETE FROM done WHERE seq = old.seq; END;"
	"CREATE VIEW IF NOT EXISTS inbox AS SELECT e.seq AS seq, e.id AS id,"
	"  e.provider AS provider, e.endpoint AS endpoint, e.kind AS kind,"
	"  e.conversation AS conversation, e.message_id AS message_id,"
	"  e.status AS status, e.dedup AS dedup, e.dedup2 AS dedup2,"
	"  e.body AS body,"
	"  CASE WHEN d.seq IS NULL THEN e.state ELSE 1 END AS state,"
	"  coalesce(d.attempts, e.attempts) AS attempts,"
	"  CASE WHEN d.seq IS NULL THEN e.due_ms END AS due_ms,"
	"  e.last_error AS last_error, e.requeue AS requeue,"
	"  e.acked_ms AS acked_ms, coalesce(d.done_ms, e.done_ms) AS done_ms"
	"  FROM events e LEFT JOIN done d ON d.seq = e.seq;"
	/* a new database is version 2 here: migrate() makes it 5 */
	"INSERT OR IGNORE INTO meta VALUES ('schema_version', '2');";

/* The integer the query answers, or 0 (no row, or an error). */
static int
query_int(sqlite3 *h, const char *sql)
{
	sqlite3_stmt	*st;
	int		 v = 0;

	if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
		return 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

#define SCHEMA_VERSION	"SELECT CAST(value AS INTEGER) FROM meta" \
	" WHERE key = 'schema_version'"
#define HAS_SECRET_FP	"SELECT count(*) FROM pragma_table_info(" \
	"'oauth_tokens') WHERE name = 'secret_fp'"
#define HAS_DEDUP2	"SELECT count(*) FROM pragma_table_info(" \
	"'events') WHERE name = 'dedup2'"

/*
 * Version 3: the dedup keys move into the events they belong to.  A key
 * of an older row is split (Kapso's delivery key to dedup2); a key two
 * rows share (a redelivery after the window) stays with the newest.
 */
static const char to_v3[] =
	"UPDATE events SET dedup2 = substr(dedup, 1, instr(dedup, char(10)) - 1),"
	"  dedup = substr(dedup, instr(dedup, char(10)) + 1)"
	"  WHERE instr(dedup, char(10)) > 0;"
	"UPDATE events SET dedup2 = dedup, dedup = NULL"
	"  WHERE dedup2 IS NULL AND dedup LIKE 'k:%';"
	"UPDATE events SET dedup = NULL WHERE dedup IS NOT NULL AND seq NOT IN"
	"  (SELECT max(seq) FROM events WHERE dedup IS NOT NULL"
	"   GROUP BY dedup);"
	"UPDATE events SET dedup2 = NULL WHERE dedup2 IS NOT NULL AND seq NOT IN"
	"  (SELECT max(seq) FROM events WHERE dedup2 IS NOT NULL"
	"   GROUP BY dedup2);"
	"CREATE UNIQUE INDEX IF NOT EXISTS events_dedup ON events(dedup)"
	"  WHERE dedup IS NOT NULL;"
	"CREATE UNIQUE INDEX IF NOT EXISTS events_dedup2 ON events(dedup2)"
	"  WHERE dedup2 IS NOT NULL;"
	"DROP TABLE IF EXISTS dedup;"
	"INSERT INTO meta VALUES ('schema_version', '3')"
	"  ON CONFLICT (key) DO UPDATE SET value = excluded.value;";

/*
 * Version 4: done marks in a table of their own (the schema above), and
 * pending_from where the pending events start, found here through the
 * old index of pending events before it goes.  Rows done before stay
 * as they are (state 1).
 */
static const char to_v4[] =
	"INSERT INTO meta VALUES ('pending_from', (SELECT coalesce(min(seq),"
	"  (SELECT coalesce(max(seq), 0) + 1 FROM events)) FROM events"
	"  WHERE state = 0))"
	"  ON CONFLICT (key) DO UPDATE SET value = excluded.value;"
	"DROP INDEX IF EXISTS events_pending;"
	"UPDATE meta SET value = '4' WHERE key = 'schema_version';";

/* Version 5: status ranks read from the status events (statuses, above). */
static const char to_v5[] =
	"CREATE INDEX IF NOT EXISTS events_status ON events(message_id)"
	"  WHERE status IS NOT NULL;"
	"UPDATE meta SET value = '5' WHERE key = 'schema_version';";

/*
 * Bring a database of an older schema up to date: version 1 had no
 * oauth_tokens.secret_fp (CREATE TABLE IF NOT EXISTS left the old table
 * as it was), version 2 kept dedup keys in a table of their own, version
 * 3 marked done events in their rows, version 4 recorded status ranks
 * in a table of their own.  Under the write lock, so that of several
 * connections opening at once exactly one migrates; the others then see
 * version 5.
 */
static int
migrate(sqlite3 *h, char **msg)
{
	int	v = query_int(h, SCHEMA_VERSION);

	if (v > 5) {
		/* a walua made after this one: what it writes means more */
		*msg = sqlite3_mprintf("schema version %d is newer than this"
		    " walua's (5): run the walua that wrote it, or a newer"
		    " one", v);
		return SQLITE_ERROR;
	}
	if (v == 5)
		return SQLITE_OK;
	if (sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, msg) != SQLITE_OK)
		return SQLITE_ERROR;
	if ((query_int(h, SCHEMA_VERSION) < 3 && ((query_int(h,
	    HAS_SECRET_FP) == 0 && sqlite3_exec(h, "ALTER TABLE oauth_tokens"
	    " ADD COLUMN secret_fp TEXT", NULL, NULL, msg) != SQLITE_OK) ||
	    (query_int(h, HAS_DEDUP2) == 0 && sqlite3_exec(h, "ALTER TABLE"
	    " events ADD COLUMN dedup2 TEXT", NULL, NULL, msg) != SQLITE_OK) ||
	    sqlite3_exec(h, to_v3, NULL, NULL, msg) != SQLITE_OK)) ||
	    (query_int(h, SCHEMA_VERSION) < 4 &&
	    sqlite3_exec(h, to_v4, NULL, NULL, msg) != SQLITE_OK) ||
	    (query_int(h, SCHEMA_VERSION) < 5 &&
	    sqlite3_exec(h, to_v5, NULL, NULL, msg) != SQLITE_OK)) {
		sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
		return SQLITE_ERROR;
	}
	if (sqlite3_exec(h, "COMMIT", NULL, NULL, msg) != SQLITE_OK) {
		sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
		return SQLITE_ERROR;
	}
	return SQLITE_OK;
}

int64_t
db_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Before SQLite's first use: no memory statistics (walua reads none), or
 * every allocation of every connection goes through a global mutex; and
 * the VFS that writes a commit's WAL frames at once (walvfs.c), which
 * every connection of this process opens with when it is there.
 */
static const char	*vfs_name;

static void
db_configure(void)
{
	(void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	if (walvfs_register() == SQLITE_OK)
		vfs_name = WALVFS_NAME;
}

/*
 * Open (creating if needed) the database at path.  durability is a
 * DURABILITY_* value: full syncs the WAL at every commit, normal at
 * checkpoints (a killed process loses nothing; a power cut may lose the
 * last commits), off never.  Returns NULL with the reason in err.
 */
struct db *
db_open(const char *path, int durability, char *err, size_t errlen)
{
	static pthread_once_t	once = PTHREAD_ONCE_INIT;

	struct db	*d;
	char		*msg = NULL;
	const char	*sync = durability == DURABILITY_FULL ? "FULL" :
			    durability == DURABILITY_OFF ? "OFF" : "NORMAL";
	char		 pragmas[256];

	pthread_once(&once, db_configure);
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (db_is_pg(path)) {
		if (pg_open(d, path, durability, err, errlen) == -1) {
			db_close(d);
			return NULL;
		}
		return d;
	}
	if (sqlite3_open_v2(path, &d->h, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, vfs_name) != SQLITE_OK) {
		snprintf(err, errlen, "cannot open database '%s': %s", path,
		    d->h ? sqlite3_errmsg(d->h) : "out of memory");
		db_close(d);
		return NULL;
	}
	sqlite3_busy_timeout(d->h, 5000);
	snprintf(pragmas, sizeof(pragmas), "PRAGMA journal_mode = WAL;"
	    "PRAGMA synchronous = %s;", sync);
	if (sqlite3_exec(d->h, pragmas, NULL, NULL, &msg) != SQLITE_OK ||
	    sqlite3_exec(d->h, schema, NULL, NULL, &msg) != SQLITE_OK ||
	    migrate(d->h, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "database '%s': %s", path,
		    msg ? msg : sqlite3_errmsg(d->h));
		sqlite3_free(msg);
		db_close(d);
		return NULL;
	}
	return d;
}

void
db_close(struct db *d)
{
	int	i;

	if (d == NULL)
		return;
	if (d->pg != NULL || d->url != NULL) {
		pg_close(d);
		free(d);
		return;
	}
	for (i = 0; i < DB_CACHE; i++)
		sqlite3_finalize(d->cache[i].st);
	sqlite3_close(d->h);
	free(d);
}

/*
 * A prepared statement for sql (a string literal: the cache compares
 * addresses), reset and unbound.  NULL on error (db_error says why).
 */
sqlite3_stmt *
db_prepare(struct db *d, const char *sql)
{
	sqlite3_stmt	*st;
	int		 i;

	for (i = 0; i < DB_CACHE && d->cache[i].sql != NULL; i++)
		if (d->cache[i].sql == sql) {
			st = d->cache[i].st;
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			return st;
		}
	if (sqlite3_prepare_v2(d->h, sql, -1, &st, NULL) != SQLITE_OK)
		return NULL;
	if (i < DB_CACHE) {
		d->cache[i].sql = sql;
		d->cache[i].st = st;
	} else {
		/* the cache is sized for walua's statements; never reached */
		sqlite3_finalize(d->cache[DB_CACHE - 1].st);
		d->cache[DB_CACHE - 1].sql = sql;
		d->cache[DB_CACHE - 1].st = st;
	}
	return st;
}

/*
 * Run one statement without results (sql a string literal, as for
 * db_prepare): BEGIN, COMMIT and savepoints run on every group commit,
 * and parsing them each time costs more than running them.
 */
int
db_exec(struct db *d, const char *sql)
{
	sqlite3_stmt	*st;
	int		 rc;

	if (d->pg != NULL)
		return pg_cmd(d, sql, 0, NULL) == -1 ? -1 : 0;
	if ((st = db_prepare(d, sql)) == NULL)
		return -1;
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

const char *
db_error(struct db *d)
{
	if (d->pg != NULL || d->url != NULL)
		return pg_error(d);
	return sqlite3_errmsg(d->h);
}
