/*
 * kv_pg.c - the shared state (kv.h) on PostgreSQL: the same statements as
 * kv.c's in PostgreSQL's dialect, with the same meaning.  kv.c's
 * functions hand over here when their connection is PostgreSQL's.
 * Parameters travel as text; NULL is SQL's NULL.
 */
#include "kv_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "db_pg.h"
#include "kv.h"

#define I64(buf, v)	(snprintf(buf, sizeof(buf), "%lld", (long long)(v)), buf)

int
kvpg_get(struct db *d, const char *key, int64_t now_ms, char **value)
{
	static const char sql[] = "SELECT value FROM kv WHERE key = $1 AND"
	    " (expires_ms IS NULL OR expires_ms > $2)";
	char		 now[24];
	const char	*v[2] = { key, I64(now, now_ms) };
	PGresult	*res;
	int		 found;

	*value = NULL;
	if ((res = pg_run(d, sql, 2, v, NULL, NULL)) == NULL)
		return -1;
	if ((found = PQntuples(res) > 0))
		*value = strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (found && *value == NULL)
		return -1;
	return found;
}

int
kvpg_set(struct db *d, const char *key, const char *value,
    int64_t expires_ms)
{
	static const char sql[] = "INSERT INTO kv (key, value, expires_ms)"
	    " VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE SET"
	    " value = EXCLUDED.value, expires_ms = EXCLUDED.expires_ms";
	char		 exp[24];
	const char	*v[3] = { key, value, expires_ms > 0 ? I64(exp,
			    expires_ms) : NULL };

	return pg_cmd(d, sql, 3, v) == -1 ? -1 : 0;
}

int
kvpg_del(struct db *d, const char *key)
{
	static const char sql[] = "DELETE FROM kv WHERE key = $1";

	return pg_cmd(d, sql, 1, &key) == -1 ? -1 : 0;
}

/*
 * One statement, so that every instance's increments add up; a value
 * that is not an integer counts as 0 (as SQLite's CAST makes it).
 */
int
kvpg_incr(struct db *d, const char *key, int64_t by, int64_t expires_ms,
    int64_t now_ms, int64_t *result)
{
	static const char sql[] =
	    "INSERT INTO kv (key, value, expires_ms) VALUES ($1, $2::bigint::text,"
	    " $3::bigint) ON CONFLICT (key) DO UPDATE SET"
	    " value = CASE WHEN kv.expires_ms IS NOT NULL AND"
	    "   kv.expires_ms <= $4::bigint THEN $2::bigint::text"
	    "   ELSE ((CASE WHEN kv.value ~ '^\\s*[-+]?[0-9]+\\s*$'"
	    "     THEN trim(kv.value)::bigint ELSE 0 END) + $2::bigint)::text"
	    "   END,"
	    " expires_ms = CASE WHEN $3::bigint IS NOT NULL THEN $3::bigint"
	    "   WHEN kv.expires_ms IS NOT NULL AND kv.expires_ms <= $4::bigint"
	    "   THEN NULL ELSE kv.expires_ms END"
	    " RETURNING value::bigint";
	char		 b[24], exp[24], now[24];
	const char	*v[4] = { key, I64(b, by), expires_ms > 0 ? I64(exp,
			    expires_ms) : NULL, I64(now, now_ms) };
	PGresult	*res;

	if ((res = pg_run(d, sql, 4, v, NULL, NULL)) == NULL)
		return -1;
	*result = PQntuples(res) > 0 ? atoll(PQgetvalue(res, 0, 0)) : 0;
	PQclear(res);
	return 0;
}

int
kvpg_token_put(struct db *d, const char *hash, const char *client,
    const char *scope, const char *secret_fp, int64_t expires_ms,
    int64_t now_ms)
{
	static const char sql[] = "INSERT INTO oauth_tokens (hash, client_id,"
	    " scope, expires_ms, secret_fp) VALUES ($1, $2, $3, $4, $5)";
	static const char prune[] = "DELETE FROM oauth_tokens WHERE hash IN"
	    " (SELECT hash FROM oauth_tokens WHERE expires_ms < $1 LIMIT 100)";
	char		 exp[24], now[24];
	const char	*v[5] = { hash, client, scope, I64(exp, expires_ms),
			    secret_fp };
	const char	*p[1] = { I64(now, now_ms) };

	if (pg_cmd(d, sql, 5, v) == -1)
		return -1;
	(void)pg_cmd(d, prune, 1, p);
	return 0;
}

int
kvpg_token_get(struct db *d, const char *hash, struct kv_token *t)
{
	static const char sql[] = "SELECT client_id, coalesce(scope, ''),"
	    " secret_fp, expires_ms FROM oauth_tokens WHERE hash = $1";
	PGresult	*res;

	memset(t, 0, sizeof(*t));
	if ((res = pg_run(d, sql, 1, &hash, NULL, NULL)) == NULL)
		return -1;
	if (PQntuples(res) == 0) {
		PQclear(res);
		return 0;
	}
	t->unbound = PQgetisnull(res, 0, 2);
	t->client_id = strdup(PQgetvalue(res, 0, 0));
	t->scope = strdup(PQgetvalue(res, 0, 1));
	if (!t->unbound)
		snprintf(t->secret_fp, sizeof(t->secret_fp), "%s",
		    PQgetvalue(res, 0, 2));
	t->expires_ms = atoll(PQgetvalue(res, 0, 3));
	PQclear(res);
	if (t->client_id == NULL || t->scope == NULL) {
		kv_token_clear(t);
		return -1;
	}
	return 1;
}

int
kvpg_token_bind(struct db *d, const char *client, const char *secret_fp)
{
	static const char sql[] = "UPDATE oauth_tokens SET secret_fp = $2"
	    " WHERE client_id = $1 AND secret_fp IS NULL";
	const char	*v[2] = { client, secret_fp };

	return pg_cmd(d, sql, 2, v) == -1 ? -1 : 0;
}

int
kvpg_status_rank(struct db *d, const char *message_id)
{
	static const char sql[] = "SELECT rank FROM statuses WHERE"
	    " message_id = $1";
	PGresult	*res;
	int		 rank = 0;

	if ((res = pg_run(d, sql, 1, &message_id, NULL, NULL)) == NULL)
		return 0;
	if (PQntuples(res) > 0)
		rank = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	return rank;
}

int
kvpg_status_set(struct db *d, const char *message_id, int rank,
    int64_t now_ms)
{
	static const char sql[] = "INSERT INTO statuses (message_id, rank,"
	    " updated_ms) VALUES ($1, $2, $3) ON CONFLICT (message_id) DO UPDATE"
	    " SET rank = greatest(statuses.rank, EXCLUDED.rank),"
	    " updated_ms = EXCLUDED.updated_ms";
	char		 r[16], now[24];
	const char	*v[3] = { message_id, r, I64(now, now_ms) };

	snprintf(r, sizeof(r), "%d", rank);
	return pg_cmd(d, sql, 3, v) == -1 ? -1 : 0;
}

int
kvpg_send_get(struct db *d, const char *event_id, int seq,
    char **message_id, char **error)
{
	static const char sql[] = "SELECT message_id, error FROM sends"
	    " WHERE event_id = $1 AND seq = $2";
	char		 s[16];
	const char	*v[2] = { event_id, s };
	PGresult	*res;
	int		 found;

	*message_id = *error = NULL;
	snprintf(s, sizeof(s), "%d", seq);
	if ((res = pg_run(d, sql, 2, v, NULL, NULL)) == NULL)
		return -1;
	if ((found = PQntuples(res) > 0)) {
		if (!PQgetisnull(res, 0, 0))
			*message_id = strdup(PQgetvalue(res, 0, 0));
		if (!PQgetisnull(res, 0, 1))
			*error = strdup(PQgetvalue(res, 0, 1));
	}
	PQclear(res);
	return found;
}

int
kvpg_send_begin(struct db *d, const char *event_id, int seq,
    const char *provider, const char *phone, const char *recipient,
    int64_t now_ms)
{
	static const char sql[] = "INSERT INTO sends (event_id, seq, provider,"
	    " phone, recipient, created_ms) VALUES ($1, $2, $3, $4, $5, $6)"
	    " ON CONFLICT (event_id, seq) DO UPDATE SET provider = $3,"
	    " phone = $4, recipient = $5, message_id = NULL, error = NULL,"
	    " answered_ms = NULL";
	char		 s[16], now[24];
	const char	*v[6] = { event_id, s, provider, phone, recipient,
			    I64(now, now_ms) };

	snprintf(s, sizeof(s), "%d", seq);
	return pg_cmd(d, sql, 6, v) == -1 ? -1 : 0;
}

int
kvpg_send_answer(struct db *d, const char *event_id, int seq,
    const char *message_id, const char *error, int64_t now_ms)
{
	static const char sql[] = "UPDATE sends SET message_id = $3,"
	    " error = $4, answered_ms = $5 WHERE event_id = $1 AND seq = $2";
	char		 s[16], now[24];
	const char	*v[5] = { event_id, s, message_id, error,
			    I64(now, now_ms) };

	snprintf(s, sizeof(s), "%d", seq);
	return pg_cmd(d, sql, 5, v) == -1 ? -1 : 0;
}

/* As kv_prune: at most limit rows of each table, in one transaction. */
int
kvpg_prune(struct db *d, int64_t now_ms, int64_t keep_ms, int limit,
    long *deleted)
{
	static const char *const sqls[] = {
	    /* $1 now, $2 the rows; the others: $2 keep_ms, $3 the rows */
	    "DELETE FROM kv WHERE ctid IN (SELECT ctid FROM kv"
	    " WHERE expires_ms IS NOT NULL AND expires_ms <= $1 LIMIT $2)",
	    "DELETE FROM statuses WHERE ctid IN (SELECT ctid FROM statuses"
	    " WHERE updated_ms < $1::bigint - $2::bigint LIMIT $3)",
	    "DELETE FROM events WHERE ctid IN (SELECT ctid FROM events"
	    " WHERE state = 1 AND done_ms < $1::bigint - $2::bigint LIMIT $3)",
	    "DELETE FROM sends WHERE ctid IN (SELECT ctid FROM sends"
	    " WHERE created_ms < $1::bigint - $2::bigint LIMIT $3)",
	    "DELETE FROM attempts WHERE ctid IN (SELECT ctid FROM attempts"
	    " WHERE ms < $1::bigint - $2::bigint LIMIT $3)",
	};
	char		 now[24], keep[24], lim[16];
	const char	*v[3] = { I64(now, now_ms), I64(keep, keep_ms), lim };
	const char	*v1[2] = { now, lim };
	size_t		 i;
	long		 n;
	int		 more = 0;

	snprintf(lim, sizeof(lim), "%d", limit);
	*deleted = 0;
	if (db_exec(d, "BEGIN") == -1)
		return -1;
	for (i = 0; i < sizeof(sqls) / sizeof(sqls[0]); i++) {
		if ((n = i == 0 ? pg_cmd(d, sqls[i], 2, v1) : pg_cmd(d, sqls[i],
		    3, v)) == -1)
			goto fail;
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
