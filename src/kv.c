/*
 * kv.c - the shared state on SQLite (see kv.h), or on PostgreSQL when the
 * connection is one (kv_pg.c).  Every function runs in
 * the caller's transaction, if any, on the caller's connection.  Values
 * of walua.store are JSON texts; expiry times are wall-clock ms, 0 for
 * none.  Functions return 0 (or a count), or -1 on a database error.
 */
#include "kv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "kv_pg.h"

static int
step_done(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* The live value of key into *value (caller frees): 1, or 0 if none. */
int
kv_get(struct db *d, const char *key, int64_t now_ms, char **value)
{
	static const char sql[] = "SELECT value FROM kv WHERE key = ?1 AND"
	    " (expires_ms IS NULL OR expires_ms > ?2)";
	sqlite3_stmt	*st;
	int		 rc;

	if (d->h == NULL)	/* PostgreSQL */
		return kvpg_get(d, key, now_ms, value);

	*value = NULL;
	if ((st = db_prepare(d, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, now_ms);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*value = strdup((const char *)sqlite3_column_text(st, 0));
		sqlite3_reset(st);
		return *value != NULL ? 1 : -1;
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

int
kv_set(struct db *d, const char *key, const char *value, int64_t expires_ms)
{
	static const char sql[] = "INSERT INTO kv (key, value, expires_ms)"
	    " VALUES (?1, ?2, ?3) ON CONFLICT (key) DO UPDATE SET"
	    " value = excluded.value, expires_ms = excluded.expires_ms";
	sqlite3_stmt *st;

	if (d->h == NULL)	/* PostgreSQL */
		return kvpg_set(d, key, value, expires_ms);

	if ((st = db_prepare(d, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
	if (expires_ms > 0)
		sqlite3_bind_int64(st, 3, expires_ms);
	return step_done(st);
}

int
kv_del(struct db *d, const char *key)
{
	static const char sql[] = "DELETE FROM kv WHERE key = ?1";
	sqlite3_stmt *st;

	if (d->h == NULL)	/* PostgreSQL */
		return kvpg_del(d, key);

	if ((st = db_prepare(d, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	return step_done(st);
}

/*
 * Add by to the number at key (a missing, expired or non-numeric value
 * counts as 0) in one statement, so concurrent workers never lose an
 * increment.  expires_ms > 0 sets a new expiry; 0 keeps the old one.
 */
int
kv_incr(struct db *d, const char *key, int64_t by, int64_t expires_ms,
    int64_t now_ms, int64_t *result)
{
	static const char sql[] =
	    "INSERT INTO kv (key, value, expires_ms) VALUES (?1, ?2, ?3)"
	    " ON CONFLICT (key) DO UPDATE SET"
	    " value = CASE WHEN kv.expires_ms IS NOT NULL AND"
	    "   kv.expires_ms <= ?4 THEN ?2"
	    "   ELSE CAST(CAST(kv.value AS INTEGER) + ?2 AS TEXT) END,"
	    " expires_ms = CASE WHEN ?3 IS NOT NULL THEN ?3"
	    "   WHEN kv.expires_ms IS NOT NULL AND kv.expires_ms <= ?4 THEN NULL"
	    "   ELSE kv.expires_ms END"
	    " RETURNING CAST(value AS INTEGER)";
	sqlite3_stmt	*st;
	int		 rc;

	if (d->h == NULL)	/* PostgreSQL */
		return kvpg_incr(d, key, by, expires_ms, now_ms, result);

	if ((st = db_prepare(d, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, by);
	if (expires_ms > 0)
		sqlite3_bind_int64(st, 3, expires_ms);
	sqlite3_bind_int64(st, 4, now_ms);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*result = sqlite3_column_int64(st, 0);
	if (rc == SQLITE_ROW)
		rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/*
 * Store an issued OAuth2 token (by its hash) with the fingerprint of its
 * client's secret, until expires_ms, dropping a few expired ones on the
 * way.
 */
int
kv_token_put(struct db *d, const char *hash, const char *client,
    const char *scope, const char *secret_fp, int64_t expires_ms,
    int64_t now_ms)
{
	static const char sql[] = "INSERT INTO oauth_tokens (hash, client_id,"
	    " scope, expires_ms, secret_fp) VALUES (?1, ?2, ?3, ?4, ?5)";
	static const char prune[] = "DELETE FROM oauth_tokens WHERE hash IN"
	    " (SELECT hash FROM oauth_tokens WHERE expires_ms < ?1 LIMIT 100)";
	sqlite3_stmt	*st;

	if (d->h == NULL)	/* PostgreSQL */
		return kvpg_token_put(d, hash, client, scope, secret_fp,
		    expires_ms, now_ms);

	if ((st = db_prepare(d, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, client, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, scope, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, expires_ms);
	sqlite3_bind_text(st, 5, secret_fp, -1, SQLITE_STATIC);
	if (step_done(st) == -1)
		return -1;
	if ((st = db_prepare(d, prune)) != NULL) {
		sqlite3_bind_int64(st, 1, now_ms);
		(void)step_done(st);
	}
	return 0;
}

/*
 * The token with hash into *t: 1 (found; kv_token_clear frees it), 0
 * (unknown) or -1.
 */
int
kv_token_get(struct db *d, const char *hash, struct kv_token *t)
{
	static const char sql[] = "SELECT client_id, coalesce(scope, ''),"
	    " secret_fp, expires_ms FROM oauth_tokens WHERE hash = ?1";
	sqlite3_stmt	*st;
	const char	*s;
	int		 rc;

	if (d->h == NULL)	/* PostgreSQL */
		return kvpg_token_get(d, hash, t);

	memset(t, 0, sizeof(*t));
	if ((st = db_prepare(d, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		t->unbound = sqlite3_column_type(st, 2) == SQLITE_NULL;
		if ((s = (const char *)sqlite3_column_text(st, 0)) != NULL)
			t->client_id = strdup(s);
		if ((s = (const char *)sqlite3_column_text(st, 1)) != NULL)
			t->scope = strdup(s);
		if ((s = (const char *)sqlite3_column_text(st, 2)) != NULL)
			snprintf(t->secret_fp, sizeof(t->secret_fp), "%s", s);
		t->expires_ms = sqlite3_column_int64(st, 3);
	}
	sqlite3_reset(st);
	if (rc == SQLITE_ROW && (t->client_id == NULL || t->scope == NULL)) {
		kv_token_clear(t);
		return -1;
	}
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

void
kv_token_clear(struct kv_token *t)
{
	free(t->client_id);
	free(t->scope);
	memset(t, 0, sizeof(*t));
}

/*
 * Bind client's tokens stored without a secret fingerprint (by a walua
 * that did not record one) to secret_fp.
 */
int
kv_token_bind(struct db *d, const char *client, const char *secret_fp)
{
	static const char sql[] = "UPDATE oauth_tokens SET secret_fp = ?2"
	    " WHERE client_id = ?1 AND secret_fp IS NULL";
	sqlite3_stmt	*st;

	if (d->h == NULL)	/* PostgreSQL */
		return kvpg_token_bind(d, client, secret_fp);

	if ((st = db_prepare(d, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, client, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, secret_fp, -1, SQLITE_STATIC);
	return step_done(st);
}

/* A status's rank for ev.stale: sent < delivered < read < played. */
int
kv_rank_of(const char *status)
{
	static const char *ranks[] = { "sent", "delivered", "read", "played",
	    NULL };
	int	i;

	if (status == NULL)
		return 0;
	for (i = 0; ranks[i] != NULL; i++)
		if (strcmp(ranks[i], status) == 0)
			return i + 1;
	return 0;		/* failed and unknown: never stale */
}

/*
 * The highest status rank handled for message_id: 0 when none.  On
 * SQLite, the inbox itself tells: the status events of the message that
 * have their done mark (found through events_status, db.c), and what a
 * walua before schema version 5 wrote into statuses.  Only events before
 * seq are read: the writer, storing the event of seq, need not read
 * that event and its batch (not handled yet) back.
 */
int
kv_status_rank(struct db *d, const char *message_id, long long seq)
{
	static const char sql[] = "SELECT status FROM events e"
	    " WHERE message_id = ?1 AND status IS NOT NULL AND seq < ?2 AND"
	    " (state = 1 OR EXISTS (SELECT 1 FROM done WHERE seq = e.seq))"
	    " UNION ALL SELECT rank FROM statuses WHERE message_id = ?1";
	sqlite3_stmt	*st;
	int		 rank = 0, r;

	if (d->h == NULL)	/* PostgreSQL */
		return kvpg_status_rank(d, message_id);

	if ((st = db_prepare(d, sql)) == NULL)
		return 0;
	sqlite3_bind_text(st, 1, message_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, seq);
	while (sqlite3_step(st) == SQLITE_ROW) {
		r = sqlite3_column_type(st, 0) == SQLITE_INTEGER ?
		    sqlite3_column_int(st, 0) :
		    kv_rank_of((const char *)sqlite3_column_text(st, 0));
		if (r > rank)
			rank = r;
	}
	sqlite3_reset(st);
	return rank;
}

/*
 * Record that a status of rank was handled for message_id (keeps the
 * max).  On SQLite the event's done mark records it (kv_status_rank):
 * nothing to write.
 */
int
kv_status_set(struct db *d, const char *message_id, int rank, int64_t now_ms)
{
	if (d->h == NULL)	/* PostgreSQL */
		return kvpg_status_set(d, message_id, rank, now_ms);
	return 0;
}

/*
 * The journal entry of the seq-th send of event_id's run: 1 with what is
 * known (message_id, error: NULL when the provider has not answered; the
 * caller frees them), 0 when there is none, -1 on a database error.
 */
int
kv_send_get(struct db *d, const char *event_id, int seq, char **message_id,
    char **error)
{
	static const char sql[] = "SELECT message_id, error FROM sends"
	    " WHERE event_id = ?1 AND seq = ?2";
	sqlite3_stmt	*st;
	int		 rc;

	if (d->h == NULL)	/* PostgreSQL */
		return kvpg_send_get(d, event_id, seq, message_id, error);

	*message_id = *error = NULL;
	if ((st = db_prepare(d, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, event_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, seq);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (sqlite3_column_type(st, 0) != SQLITE_NULL)
			*message_id = strdup((const char *)
			    sqlite3_column_text(st, 0));
		if (sqlite3_column_type(st, 1) != SQLITE_NULL)
			*error = strdup((const char *)
			    sqlite3_column_text(st, 1));
	}
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : -1;
}

/*
 * Record that the seq-th send of event_id's run is going out now (before
 * the request: a crash between the two leaves an entry with no answer).
 * An earlier entry of it is made unanswered again.  0 or -1.
 */
int
kv_send_begin(struct db *d, const char *event_id, int seq,
    const char *provider, const char *phone, const char *recipient,
    int64_t now_ms)
{
	static const char sql[] = "INSERT INTO sends (event_id, seq, provider,"
	    " phone, recipient, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
	    " ON CONFLICT (event_id, seq) DO UPDATE SET provider = ?3,"
	    " phone = ?4, recipient = ?5, message_id = NULL, error = NULL,"
	    " answered_ms = NULL";
	sqlite3_stmt *st;

	if (d->h == NULL)	/* PostgreSQL */
		return kvpg_send_begin(d, event_id, seq, provider, phone,
		    recipient, now_ms);

	if ((st = db_prepare(d, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, event_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, seq);
	sqlite3_bind_text(st, 3, provider, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, phone, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, recipient, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, now_ms);
	return step_done(st);
}

/* The provider answered the send: its message id, or an error.  0 or -1. */
int
kv_send_answer(struct db *d, const char *event_id, int seq,
    const char *message_id, const char *error, int64_t now_ms)
{
	static const char sql[] = "UPDATE sends SET message_id = ?3,"
	    " error = ?4, answered_ms = ?5 WHERE event_id = ?1 AND seq = ?2";
	sqlite3_stmt *st;

	if (d->h == NULL)	/* PostgreSQL */
		return kvpg_send_answer(d, event_id, seq, message_id, error,
		    now_ms);

	if ((st = db_prepare(d, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, event_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, seq);
	sqlite3_bind_text(st, 3, message_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, error, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, now_ms);
	return step_done(st);
}

/*
 * Delete up to limit expired rows of each table (walua.store values past
 * their TTL; status ranks, finished events with their dedup keys and
 * sends older than keep_ms), in one transaction.  Bounded, so the writer
 * never stalls long; the caller runs it again soon while a table had more
 * (returns 1), at leisure when none had (0), or after an error (-1).
 * *deleted gets the rows deleted.
 */
int
kv_prune(struct db *d, int64_t now_ms, int64_t keep_ms, int limit,
    long *deleted)
{
	static const char *const sqls[] = {
	    "DELETE FROM kv WHERE key IN (SELECT key FROM kv"
	    " WHERE expires_ms IS NOT NULL AND expires_ms <= ?1 LIMIT ?3)",
	    "DELETE FROM statuses WHERE message_id IN (SELECT message_id FROM"
	    " statuses WHERE updated_ms < ?1 - ?2 LIMIT ?3)",
	    /*
	     * Done events: those marked done before schema version 4, and
	     * the oldest rows of done (the trigger of db.c deletes those
	     * with their events).  Read from the front of done, in seq
	     * order, which is nearly the order they were done in: an event
	     * done late (after retries) holds back at most its limit's
	     * share for as long as it was late.  The newest event stays,
	     * so that a seq is never given twice (db.c).
	     */
	    "DELETE FROM events WHERE seq IN (SELECT seq FROM events"
	    " WHERE state = 1 AND done_ms < ?1 - ?2 LIMIT ?3)"
	    " AND seq < (SELECT max(seq) FROM events)",
	    "DELETE FROM events WHERE seq IN (SELECT seq FROM (SELECT seq,"
	    " done_ms FROM done ORDER BY seq LIMIT ?3) WHERE done_ms < ?1 - ?2)"
	    " AND seq < (SELECT max(seq) FROM events)",
	    "DELETE FROM sends WHERE (event_id, seq) IN (SELECT event_id, seq"
	    " FROM sends WHERE created_ms < ?1 - ?2 LIMIT ?3)",
	    "DELETE FROM attempts WHERE rowid IN (SELECT rowid FROM attempts"
	    " WHERE ms < ?1 - ?2 LIMIT ?3)",
	};
	sqlite3_stmt	*st;
	size_t		 i;
	int		 n, more = 0;

	if (d->h == NULL)	/* PostgreSQL */
		return kvpg_prune(d, now_ms, keep_ms, limit, deleted);

	*deleted = 0;
	if (db_exec(d, "BEGIN IMMEDIATE") == -1)
		return -1;
	for (i = 0; i < sizeof(sqls) / sizeof(sqls[0]); i++) {
		if ((st = db_prepare(d, sqls[i])) == NULL)
			goto fail;
		sqlite3_bind_int64(st, 1, now_ms);
		sqlite3_bind_int64(st, 2, keep_ms);
		sqlite3_bind_int(st, 3, limit);
		if (step_done(st) == -1)
			goto fail;
		n = sqlite3_changes(d->h);
		*deleted += n;
		if (n >= limit)
			more = 1;
	}
	if (db_exec(d, "COMMIT") == -1)
		goto fail;
	return more;
fail:
	db_exec(d, "ROLLBACK");
	*deleted = 0;
	return -1;
}
