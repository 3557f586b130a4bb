/*
 * inbox.c - the durable inbox: every acknowledged event is committed to
 * SQLite before its 200, each handled once, retried, dead-lettered.
 *
 * One writer thread owns the write connection.  HTTP threads submit a
 * decoded batch and wait; the writer takes every submission and every
 * outcome report waiting, and commits them in one transaction (group
 * commit: with durability "full" one fsync serves many requests).  Per
 * request it claims the dedup keys and inserts the new events inside a
 * savepoint, so one bad request fails alone.  Only after COMMIT does it
 * queue the new events for the handlers and wake the requests: a 200
 * always means "committed".  A failed commit answers 503 and keeps
 * nothing; the outcome reports are kept and written with the next commit.
 *
 * The supervisor reports outcomes (done, retry, dead) without waiting;
 * they ride along with the next group commit, and "event handled" is
 * logged only once the done mark is committed.  On
 * start, pending events are loaded back into the queue in arrival order;
 * events an admin replays (`walua run inbox replay`) are picked up by a
 * poll every half second.
 */
#include "inbox.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "checkpoint.h"
#include "config.h"
#include "db.h"
#include "db_pg.h"
#include "inbox_pg.h"
#include "kv.h"
#include "log.h"
#include "metrics.h"
#include "minutes.h"
#include "queue.h"
#include "seqset.h"
#include "strhash.h"

#define TRIES		3		/* a request's inserts, at most */
#define POLL_MS		500		/* replayed events, unhealthy probe */
#define MARKS_MS	10		/* done marks wait at most this */
#define FROM_MS		100		/* pending_from raised at most this often */
/*
 * Pruning: at most PRUNE_ROWS rows of each table per transaction (a few
 * milliseconds of the writer's time); again after PRUNE_BUSY_MS while a
 * table had more, which keeps up with PRUNE_ROWS * 1000 / PRUNE_BUSY_MS
 * (50,000) events a second, several times what one instance takes in;
 * else every PRUNE_MS.
 */
#define PRUNE_MS	1000
#define PRUNE_BUSY_MS	10
#define PRUNE_ROWS	500

enum { OP_DONE, OP_RETRY, OP_DEAD };


struct op {
	int		 type;
	char		 id[EVENT_ID_LEN + 1];
	long long	 seq;			/* the row (SQLite) */
	int		 attempts;
	int64_t		 due_ms;		/* wall clock */
	char		*error;
	char		*conv;
	char		*kind;
	char		*message_id;
	int		 rank;			/* status rank to record */
	long long	 duration_us;
	struct op	*next;
};

static pthread_mutex_t	 mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	 work_cv = PTHREAD_COND_INITIALIZER;
static struct inbox_ticket	*reqs, **reqs_tail = &reqs;
static struct op	*ops, **ops_tail = &ops;
static int		 stopping;
static int		 flush;		/* commit the reports now */
static pthread_t	 writer;
static int		 writer_started;
static struct db	*wdb;			/* the writer's connection */
static struct db	*rdb;			/* the supervisor's reader */
static atomic_int	 healthy = 1;
static atomic_long	 dead_count;
static atomic_int	 unmarked;		/* done, mark not committed */
static atomic_int	 held;			/* the supervisor waits on marks */
static atomic_int	 rank_epoch;		/* generations gone so far */
static int64_t		 dedup_keep_ms = 8LL * 86400 * 1000;
/* PostgreSQL (inbox_pg.c): this instance, its lease, a claim to make */
static int		 pg;
static char		 me[128];
static int		 lease_ms = 30000;
static int		 claim_wanted;

/*
 * SQLite: the events stored and not yet done or dead, by seq; the
 * smallest is where the pending events start (meta's pending_from, see
 * db.c), or next_seq when there is none.  The writer thread's only.
 */
static struct seqset	 unhandled;
static long long	 next_seq;	/* what the next insert gets, at least */
static long long	 from_written;	/* pending_from as last written */
static int64_t		 from_ms;	/* when */
static int		 untracked;	/* an event it has no room for */

static void		 ranks_clear(void);
static void		 keep(long long seq);

static void
op_free(struct op *o)
{
	free(o->error);
	free(o->conv);
	free(o->kind);
	free(o->message_id);
	free(o);
}

/*
 * e's dedup keys (one per line) as the two columns that hold them:
 * Kapso's delivery key ("k:...") in dedup2, the other one in dedup.
 * Cuts e->dedup in place (its lines end at their '\0').
 */
static void
split_keys(struct event *e, const char **key, const char **key2)
{
	char	*p, *nl;

	*key = *key2 = NULL;
	for (p = e->dedup; p != NULL && *p != '\0'; p = nl ? nl + 1 : NULL) {
		if ((nl = strchr(p, '\n')) != NULL)
			*nl = '\0';
		if (strncmp(p, "k:", 2) == 0) {
			if (*key2 == NULL)
				*key2 = p;
		} else if (*key == NULL)
			*key = p;
	}
}

static int
insert_event(struct inbox_ticket *r, struct event *e, const char *key,
    const char *key2, int64_t now)
{
	static const char sql[] = "INSERT INTO events (id, provider, endpoint,"
	    " kind, conversation, message_id, status, dedup, dedup2, body,"
	    " acked_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
	    " ON CONFLICT DO NOTHING";
	sqlite3_stmt	*st;
	int		 rc;

	if (pg)
		return ipg_insert(wdb, r->provider, r->endpoint, e, key, key2,
		    now);
	if ((st = db_prepare(wdb, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, e->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->provider, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, r->endpoint, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, e->kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, e->conversation, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, e->message_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, e->status, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 9, key2, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 10, e->body, (int)e->bodylen, SQLITE_STATIC);
	sqlite3_bind_int64(st, 11, now);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return -1;
	if ((rc = sqlite3_changes(wdb->h)) == 1)
		e->seq = sqlite3_last_insert_rowid(wdb->h);
	return rc;
}

/* Run sql (an UPDATE with one parameter) for key, unless key is NULL. */
static int
run_for_key(const char *sql, const char *key)
{
	sqlite3_stmt	*st;
	int		 rc;

	if (key == NULL)
		return 0;
	if ((st = db_prepare(wdb, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/*
 * A key of e is held by an earlier event.  Returns 0 when one of those
 * claims is live (acknowledged since `since`: e is a duplicate); 1 when
 * all had expired: the earlier events let go of them, for e.  -1 on a
 * database error.
 */
static int
release_expired(const char *key, const char *key2, int64_t since)
{
	static const char live[] = "SELECT count(*) FROM events WHERE"
	    " (dedup = ?1 OR dedup2 = ?2) AND acked_ms >= ?3";
	sqlite3_stmt	*st;
	int		 n;

	if (pg)
		return ipg_release_expired(wdb, key, key2, since);
	if ((st = db_prepare(wdb, live)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, key2, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, since);
	if (sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_reset(st);
		return -1;
	}
	n = sqlite3_column_int(st, 0);
	sqlite3_reset(st);
	if (n > 0)
		return 0;
	if (run_for_key("UPDATE events SET dedup = NULL WHERE dedup = ?1",
	    key) == -1 || run_for_key("UPDATE events SET dedup2 = NULL"
	    " WHERE dedup2 = ?1", key2) == -1)
		return -1;
	return 1;
}

/*
 * Insert the new events of one request: an event's insert is the claim
 * of its dedup keys (unique columns); one whose key an earlier event
 * holds, within the dedup window, is a duplicate and dropped.
 */
static int
insert_request(struct inbox_ticket *r, int64_t now)
{
	struct event_batch	*b = r->batch;
	const char		*key, *key2;
	int			 i, c;

	if (queue_unfinished() + b->n > r->cfg->limits.max_queue) {
		r->full = 1;
		return -1;
	}
	r->nnew = r->ndup = 0;
	for (i = 0; i < b->n; i++) {
		struct event *e = &b->ev[i];

		if (e->body == NULL) {	/* a duplicate in a failed try */
			r->ndup++;
			continue;
		}
		key = e->key;
		key2 = e->key2;
		if ((c = insert_event(r, e, key, key2, now)) == 0) {
			c = release_expired(key, key2,
			    now - r->cfg->limits.dedup_ms);
			if (c == 1)
				c = insert_event(r, e, key, key2, now);
		}
		if (c == -1)
			return -1;
		if (c == 0) {			/* a duplicate: drop it */
			r->ndup++;
			free(e->body);
			e->body = NULL;
			continue;
		}
		if (kv_rank_of(e->status) > 0 && e->message_id != NULL) {
			/* for ev.stale, read here: in this transaction it
			 * costs a lookup, in the supervisor a read one */
			e->prior_epoch = atomic_load(&rank_epoch);
			e->prior_rank = kv_status_rank(wdb, e->message_id,
			    e->seq);
		}
		r->nnew++;
	}
	return 0;
}

static int
apply_op(struct op *o, int64_t now)
{
	/*
	 * A done mark is a row of done (db.c), by seq, the events table's
	 * own key (every queued event has it: from its insert, or from the
	 * load of pending or replayed events).  The id is checked all the
	 * same: a wrong seq must not mark another event done.
	 */
	static const char done_sql[] = "INSERT INTO done (seq, attempts,"
	    " done_ms) SELECT ?4, ?2, ?3 WHERE EXISTS (SELECT 1 FROM events"
	    " WHERE seq = ?4 AND id = ?1) ON CONFLICT DO NOTHING";
	static const char retry_sql[] = "UPDATE events SET attempts = ?2,"
	    " due_ms = ?3, last_error = ?4 WHERE id = ?1";
	static const char dead_sql[] = "UPDATE events SET state = 2,"
	    " attempts = ?2, done_ms = ?3, last_error = ?4, due_ms = NULL"
	    " WHERE id = ?1";
	static const char attempt_sql[] = "INSERT INTO attempts (event_id,"
	    " attempt, error, ms) VALUES (?1, ?2, ?3, ?4)";
	const char	*sql = o->type == OP_DONE ? done_sql :
			    o->type == OP_RETRY ? retry_sql : dead_sql;
	sqlite3_stmt	*st;
	int		 rc;

	if (pg) {
		if (ipg_outcome(wdb, o->type == OP_DONE ? 0 : o->type ==
		    OP_RETRY ? 1 : 2, o->id, o->attempts, o->type == OP_RETRY ?
		    o->due_ms : now, o->error) == -1)
			return -1;
		goto rank;
	}
	if ((st = db_prepare(wdb, sql)) == NULL)
		return -1;
	sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, o->attempts);
	sqlite3_bind_int64(st, 3, o->type == OP_RETRY ? o->due_ms : now);
	if (o->type != OP_DONE)
		sqlite3_bind_text(st, 4, o->error, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(st, 4, o->seq);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return -1;
	if (o->type != OP_DONE) {
		/* a failed attempt, for the console's event page */
		if ((st = db_prepare(wdb, attempt_sql)) == NULL)
			return -1;
		sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 2, o->attempts);
		sqlite3_bind_text(st, 3, o->error, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, now);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			return -1;
	}
rank:
	if (o->type == OP_DONE && o->rank > 0 && o->message_id != NULL)
		return kv_status_set(wdb, o->message_id, o->rank, now);
	return 0;
}

/*
 * The code label of walua_provider_errors_total: the code itself for the
 * first CODES_MAX codes seen, "other" after them, so a sender making up
 * codes cannot grow /metrics without bound.  The writer thread only.
 */
#define CODES_MAX	64

static const char *
code_label(long long code)
{
	static long long	 seen[CODES_MAX];
	static int		 nseen;
	static char		 buf[32];
	int			 i;

	for (i = 0; i < nseen && seen[i] != code; i++)
		;
	if (i == nseen) {
		if (nseen == CODES_MAX)
			return "other";
		seen[nseen++] = code;
	}
	snprintf(buf, sizeof(buf), "%lld", code);
	return buf;
}

/*
 * walua_events_acked_total's series for provider and kind, looked up
 * only when they differ from the last event's (nearly always the same).
 * The writer thread only.
 */
static struct metric *
acked_series(const char *provider, const char *kind)
{
	static struct metric	*m;
	static char		 last_p[48], last_k[48];
	char			 labels[128];
	size_t			 np = strlen(provider), nk = strlen(kind);

	if (m == NULL || strcmp(provider, last_p) != 0 ||
	    strcmp(kind, last_k) != 0) {
		snprintf(labels, sizeof(labels), "provider=\"%s\",kind=\"%s\"",
		    provider, kind);
		m = metrics_series("walua_events_acked_total", labels);
		/* names too long to keep are looked up every time */
		last_p[0] = last_k[0] = '\0';
		if (np < sizeof(last_p) && nk < sizeof(last_k)) {
			memcpy(last_p, provider, np + 1);
			memcpy(last_k, kind, nk + 1);
		}
	}
	return m;
}

/* After a commit: queue the new events of r, in body order. */
static void
queue_new(struct inbox_ticket *r)
{
	struct event_batch	 nb;
	int			 i, j;
	char			 labels[128];

	if (r->ndup > 0)
		metrics_inc("walua_events_duplicate_total", NULL, r->ndup);
	if (r->nnew == 0)
		return;
	if (pg) {
		/* queued when claimed (inbox_pg.c): count them only */
		for (i = 0; i < r->batch->n; i++) {
			struct event *e = &r->batch->ev[i];

			if (e->body == NULL)
				continue;
			metrics_add(acked_series(r->provider, e->kind), 1);
		}
		minutes_add(MINUTES_ACKED, r->nnew);
		return;
	}
	if ((nb.ev = calloc((size_t)r->nnew, sizeof(*nb.ev))) == NULL) {
		/* committed but not queued: the next start resumes them */
		log_msg(LOG_ERROR, "inbox: out of memory queueing %d events",
		    r->nnew);
		return;
	}
	for (i = j = 0; i < r->batch->n; i++) {
		struct event *e = &r->batch->ev[i];

		if (e->body == NULL)
			continue;
		metrics_add(acked_series(r->provider, e->kind), 1);
		if (e->code != 0) {
			snprintf(labels, sizeof(labels),
			    "provider=\"%s\",code=\"%s\"", r->provider,
			    code_label(e->code));
			metrics_inc("walua_provider_errors_total", labels, 1);
		}
		nb.ev[j] = *e;
		memset(e, 0, sizeof(*e));
		memcpy(e->id, nb.ev[j].id, sizeof(e->id));
		j++;
	}
	nb.n = j;
	minutes_add(MINUTES_ACKED, j);
	if (queue_push(&nb, LONG_MAX) == -1) {
		log_msg(LOG_ERROR, "inbox: cannot queue %d committed events",
		    nb.n);
		event_batch_free(&nb);
	}
}

static void
log_done(const struct op *o)
{
	char	attempts[16], ms[32];

	if (o->type != OP_DONE || !log_enabled(LOG_DEBUG))
		return;
	snprintf(attempts, sizeof(attempts), "%d", o->attempts);
	snprintf(ms, sizeof(ms), "%.3f", (double)o->duration_us / 1000);
	log_kv(LOG_DEBUG, "event handled", "event", o->id, "conversation",
	    o->conv, "kind", o->kind, "message_id", o->message_id,
	    "#attempt", attempts, "#duration_ms", ms, NULL);
}

static char *
column(sqlite3_stmt *st, int i)
{
	if (sqlite3_column_type(st, i) == SQLITE_NULL)
		return NULL;
	return strdup((const char *)sqlite3_column_text(st, i));
}

/*
 * The event of a row whose first columns are id, kind, conversation,
 * message_id, status, body, seq (kind or body NULL when memory ran out).
 */
static void
row_event(sqlite3_stmt *st, struct event *e)
{
	memset(e, 0, sizeof(*e));
	e->prior_rank = -1;
	snprintf(e->id, sizeof(e->id), "%s", sqlite3_column_text(st, 0));
	e->kind = column(st, 1);
	e->conversation = column(st, 2);
	e->message_id = column(st, 3);
	e->status = column(st, 4);
	e->seq = sqlite3_column_int64(st, 6);
	/* packed (a blob), or JSON text from an older walua */
	if ((e->bodylen = (size_t)sqlite3_column_bytes(st, 5)) > 0 &&
	    (e->body = malloc(e->bodylen + 1)) != NULL) {
		memcpy(e->body, sqlite3_column_blob(st, 5), e->bodylen);
		e->body[e->bodylen] = '\0';
	}
}

/* Load events marked for replay into the queue (clearing the mark). */
static void
pick_up_replays(void)
{
	static const char sel[] = "SELECT id, kind, conversation, message_id,"
	    " status, body, seq FROM events WHERE requeue = 1 ORDER BY seq"
	    " LIMIT 1000";
	static const char clr[] = "UPDATE events SET requeue = 0 WHERE id = ?1";
	sqlite3_stmt	*st, *cl;
	struct event	 e;
	int		 n = 0, rc;

	if ((st = db_prepare(wdb, sel)) == NULL)
		return;
	if (db_exec(wdb, "BEGIN IMMEDIATE") == -1)
		return;
	while (sqlite3_step(st) == SQLITE_ROW) {
		row_event(st, &e);
		if ((cl = db_prepare(wdb, clr)) == NULL || e.kind == NULL ||
		    e.body == NULL) {
			event_free(&e);
			break;
		}
		/* the statement cache resets st only on its own prepare */
		sqlite3_bind_text(cl, 1, e.id, -1, SQLITE_TRANSIENT);
		sqlite3_step(cl);
		sqlite3_reset(cl);
		keep(e.seq);
		if ((rc = queue_restore(&e, 0, 0)) == -1) {
			event_free(&e);
			break;
		}
		if (rc == 1) {		/* already queued: it runs once */
			event_free(&e);
			continue;
		}
		n++;
		log_kv(LOG_INFO, "event replayed", "event", e.id, NULL);
	}
	sqlite3_reset(st);
	if (db_exec(wdb, "COMMIT") == -1)
		db_exec(wdb, "ROLLBACK");
	(void)n;
}

static long
count_dead(struct db *d)
{
	static const char sql[] = "SELECT count(*) FROM events WHERE state = 2";
	sqlite3_stmt	*st;
	long		 n = 0;

	if (d->pg != NULL)
		return ipg_count_dead(d);
	if ((st = db_prepare(d, sql)) == NULL)
		return 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		n = (long)sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return n;
}

static void
set_health(int ok, const char *why)
{
	if (ok && !atomic_load(&healthy))
		log_msg(LOG_INFO, "database writable again");
	else if (!ok && atomic_load(&healthy))
		log_kv(LOG_ERROR, "database unavailable: answering 503",
		    "error", why, NULL);
	atomic_store(&healthy, ok);
}

/* On PostgreSQL: lock the dedup keys of the group's requests. */
static int
lock_keys(struct inbox_ticket *rq)
{
	struct inbox_ticket	*r;
	struct buf		 b = { 0 };
	const char		*k;
	int			 i, rc = 0;

	for (r = rq; r != NULL; r = r->next)
		for (i = 0; i < r->batch->n * 2; i++) {
			k = i % 2 ? r->batch->ev[i / 2].key2 :
			    r->batch->ev[i / 2].key;
			if (k != NULL && (buf_puts(&b, k) == -1 ||
			    buf_puts(&b, "\n") == -1))
				rc = -1;
		}
	if (rc == -1 || b.len == 0) {
		buf_free(&b);
		return rc;
	}
	b.data[b.len - 1] = '\0';	/* no empty last key */
	rc = ipg_lock_keys(wdb, b.data);
	buf_free(&b);
	return rc;
}

/*
 * On PostgreSQL, in the commit of new events: this instance claims them
 * (and any others it can), in a savepoint, since two instances' claims
 * may deadlock (then the claim waits for the next poll).  What is left
 * without an owner (a conversation another instance holds) is notified
 * to the other instances.  -1 only when the transaction is lost.
 */
static int
claim_in_commit(PGresult **claimed)
{
	if (db_exec(wdb, "SAVEPOINT c") == -1)
		return -1;
	if ((*claimed = ipg_claim_take(wdb, me)) == NULL) {
		if (db_exec(wdb, "ROLLBACK TO c") == -1 ||
		    db_exec(wdb, "RELEASE c") == -1)
			return -1;
		return db_exec(wdb, "NOTIFY walua_events");
	}
	if (db_exec(wdb, "RELEASE c") == -1)
		return -1;
	if (ipg_unowned(wdb))
		return db_exec(wdb, "NOTIFY walua_events");
	return 0;
}

/* Where the pending events start now (SQLite). */
static long long
pending_from(void)
{
	long long	min;

	return seqset_min(&unhandled, &min) ? min : next_seq;
}

/*
 * In a commit (SQLite): raise pending_from to what the writer knows is
 * handled, at most every FROM_MS; a value lower than it could be only
 * makes the next start read a longer range.  Never above an event an
 * admin marked for replay that the writer has not picked up yet.
 */
static int
write_pending_from(void)
{
	static const char sql[] = "INSERT INTO meta (key, value) VALUES"
	    " ('pending_from', min(?1, coalesce((SELECT min(seq) FROM events"
	    " WHERE requeue = 1), ?1))) ON CONFLICT (key) DO UPDATE SET"
	    " value = excluded.value";
	sqlite3_stmt	*st;
	long long	 from = pending_from();
	int64_t		 now = queue_now_ms();
	int		 rc;

	if (untracked || from <= from_written || now - from_ms < FROM_MS)
		return 0;
	if ((st = db_prepare(wdb, sql)) == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, from);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return -1;
	from_written = from;	/* if the commit fails, the old one is lower */
	from_ms = now;
	return 0;
}

/* seq is stored and not handled yet (SQLite). */
static void
keep(long long seq)
{
	if (seqset_add(&unhandled, seq) == -1 && !untracked) {
		untracked = 1;
		log_msg(LOG_ERROR, "inbox: out of memory tracking events: "
		    "pending_from stays where it is until the next start");
	}
	if (seq >= next_seq)
		next_seq = seq + 1;
}

/* After a commit (SQLite): the new events of r are not handled yet. */
static void
keep_new(const struct inbox_ticket *r)
{
	int	i;

	for (i = 0; i < r->batch->n; i++)
		if (r->batch->ev[i].body != NULL && r->batch->ev[i].seq > 0)
			keep(r->batch->ev[i].seq);
}

/*
 * One try of a group commit (see commit_group).  Returns 0, -1, or 1 when
 * a request failed inside a transaction without savepoints (rolled back:
 * try again with them).
 */
static int
commit_try(struct inbox_ticket *rq, struct op *op, int64_t now, int apart)
{
	struct inbox_ticket	*r;
	struct op	*o;
	int		 nnew = 0, try;
	PGresult	*claimed = NULL;

	if (db_exec(wdb, pg ? "BEGIN" : "BEGIN IMMEDIATE") == -1) {
		if (pg)		/* the connection is lost, most likely */
			goto fail;
		return -1;
	}
	if (pg && rq != NULL && lock_keys(rq) == -1)
		goto fail;
	for (o = op; o != NULL; o = o->next)
		if (apply_op(o, now) == -1)
			goto fail;
	for (r = rq; r != NULL; r = r->next) {
		r->rc = r->full = 0;
		if (!apart) {
			if (insert_request(r, now) == 0) {
				nnew += r->nnew;
				continue;
			}
			if (r->full) {	/* refused before it inserted */
				r->rc = -1;
				continue;
			}
			db_exec(wdb, "ROLLBACK");
			return 1;
		}
		for (try = 1; ; try++) {
			if (db_exec(wdb, "SAVEPOINT r") == -1)
				goto fail;
			if (insert_request(r, now) == 0) {
				if (db_exec(wdb, "RELEASE r") == -1)
					goto fail;
				nnew += r->nnew;
				break;
			}
			if (db_exec(wdb, "ROLLBACK TO r") == -1 ||
			    db_exec(wdb, "RELEASE r") == -1)
				goto fail;
			/*
			 * On PostgreSQL, two instances storing the same keys
			 * in opposite orders deadlock, and one is told so;
			 * its locks went with the savepoint: try again.
			 */
			if (r->full || try == TRIES) {
				if (!r->full)
					log_kv(LOG_ERROR, "inbox: cannot store a "
					    "request: answering 503", "error",
					    db_error(wdb), NULL);
				r->rc = -1;
				break;
			}
		}
	}
	if (pg && nnew > 0 && claim_in_commit(&claimed) == -1)
		goto fail;
	if (!pg && write_pending_from() == -1)
		goto fail;
	if (db_exec(wdb, "COMMIT") == -1)
		goto fail;
	if (claimed != NULL)
		(void)ipg_claim_queue(claimed);
	return 0;
fail:
	set_health(0, db_error(wdb));
	db_exec(wdb, "ROLLBACK");
	if (claimed != NULL)
		PQclear(claimed);
	return -1;
}

/*
 * One group commit of what was taken.  Returns 0 or -1.  A request that
 * fails must fail alone: on SQLite the group is tried first without
 * savepoints (they cost a tenth of the writer's time per event, and a
 * request fails only when the disk does, or the queue is full, which is
 * known before it inserts anything); if one fails inside, the whole
 * transaction is rolled back and tried again with each request in a
 * savepoint (one name serves: it is released before the next).  On
 * PostgreSQL savepoints always: a deadlock between instances is retried
 * within its request.
 */
static int
commit_group(struct inbox_ticket *rq, struct op *op)
{
	int64_t		 now = db_now_ms();
	struct timespec	 t0, t1;
	int		 rc;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((rc = commit_try(rq, op, now, pg)) == 1)
		rc = commit_try(rq, op, now, 1);
	if (rc == 0) {
		clock_gettime(CLOCK_MONOTONIC, &t1);
		metrics_observe("walua_commit_duration_seconds",
		    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec -
		    t0.tv_nsec) / 1e9);
	}
	return rc;
}

/* While unhealthy: try a real write, so /healthz recovers without traffic. */
static void
probe(void)
{
	static const char sql[] = "INSERT INTO meta (key, value) VALUES"
	    " ('probe', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1";
	sqlite3_stmt	*st;
	int		 ok;

	if (pg) {
		if (ipg_probe(wdb) == 0) {
			ipg_listen_self(PQbackendPID(wdb->pg));
			set_health(1, NULL);
		}
		return;
	}
	if (db_exec(wdb, "BEGIN IMMEDIATE") == -1)
		return;
	ok = (st = db_prepare(wdb, sql)) != NULL;
	if (ok) {
		sqlite3_bind_int64(st, 1, db_now_ms());
		ok = sqlite3_step(st) == SQLITE_DONE;
		sqlite3_reset(st);
	}
	if (ok && db_exec(wdb, "COMMIT") == 0)
		set_health(1, NULL);
	else
		db_exec(wdb, "ROLLBACK");
}

/*
 * One batch of pruning, with the retention the running configuration
 * asks for (a reload may change dedup_days).  *more: a table had more.
 */
static void
prune(int *more)
{
	struct config	*cfg = config_get();
	long		 n;
	int		 rc;

	if (cfg != NULL) {
		dedup_keep_ms = cfg->limits.dedup_ms;
		config_put(cfg);
	}
	rc = kv_prune(wdb, db_now_ms(), dedup_keep_ms, PRUNE_ROWS, &n);
	*more = rc == 1;
	if (n > 0)
		metrics_inc("walua_pruned_rows_total", NULL, n);
}

static void *
writer_main(void *arg)
{
	struct inbox_ticket	*rq, *r, *rnext;
	struct op	*op, *o, *onext;
	struct timespec	 ts;
	int64_t		 last_poll = 0, last_prune = 0, last_renew = 0, now;
	int		 rc, n, prune_more = 0, claim;

	(void)arg;
	pthread_setname_np(pthread_self(), "inbox-writer");	/* top -H */
	pthread_mutex_lock(&mu);
	for (;;) {
		/*
		 * Done marks wait for the next request's commit, at most
		 * MARKS_MS (or until the supervisor asks): one commit then
		 * serves many.  Other reports are written at once.
		 */
		while (reqs == NULL && (ops == NULL || !flush) && !stopping &&
		    !claim_wanted) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += (ops != NULL ? MARKS_MS : prune_more ?
			    PRUNE_BUSY_MS : POLL_MS) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			if (pthread_cond_timedwait(&work_cv, &mu, &ts) ==
			    ETIMEDOUT)
				break;
		}
		if (stopping && reqs == NULL && ops == NULL)
			break;
		rq = reqs;
		reqs = NULL;
		reqs_tail = &reqs;
		op = ops;
		ops = NULL;
		ops_tail = &ops;
		flush = 0;
		claim = claim_wanted;
		claim_wanted = 0;
		pthread_mutex_unlock(&mu);

		/* the WAL starts over at this commit, if a pass is over */
		if (!pg)
			checkpoint_turn(wdb);
		rc = (rq != NULL || op != NULL) ? commit_group(rq, op) : 0;
		if (rc == 0 && (rq != NULL || op != NULL))
			set_health(1, NULL);
		for (r = rq; r != NULL; r = r->next) {
			if (rc == -1)
				r->rc = -1;
			else if (r->rc == 0) {
				if (!pg)
					keep_new(r);
				queue_new(r);
			}
		}
		for (o = op, n = 0; rc == 0 && o != NULL; o = o->next) {
			log_done(o);
			n += o->type == OP_DONE;
			if (!pg && o->type != OP_RETRY)
				seqset_del(&unhandled, o->seq);
		}
		minutes_add(MINUTES_HANDLED, n);
		/*
		 * The supervisor held events back for these marks (pool.c):
		 * wake it.  It sets held before it reads unmarked again, so
		 * one of the two sees the other's write (both seq_cst).
		 */
		if (n > 0) {
			atomic_fetch_sub(&unmarked, n);
			if (atomic_exchange(&held, 0))
				queue_wake();
		}
		/* the HTTP side may free a ticket once told: read next first */
		for (r = rq; r != NULL; r = rnext) {
			rnext = r->next;
			r->done(r);
		}

		now = queue_now_ms();
		if (pg && atomic_load(&healthy) && now - last_renew >=
		    lease_ms / 3) {
			last_renew = now;
			if (ipg_takeover(wdb, me, lease_ms) != -1)
				claim = 1;
			else if (!pg_alive(wdb))
				set_health(0, db_error(wdb));
		}
		if (now - last_poll >= POLL_MS) {
			last_poll = now;
			if (!atomic_load(&healthy))	/* writable again? */
				probe();
			if (pg)		/* replays, and missed notifications */
				claim = 1;
			else
				pick_up_replays();
			atomic_store(&dead_count, count_dead(wdb));
		}
		if (pg && claim && atomic_load(&healthy) &&
		    ipg_claim(wdb, me) == -1 && !pg_alive(wdb))
			set_health(0, db_error(wdb));
		if (now - last_prune >= (prune_more ? PRUNE_BUSY_MS :
		    PRUNE_MS)) {
			last_prune = now;
			prune(&prune_more);
		}

		pthread_mutex_lock(&mu);
		if (rc == -1 && op != NULL) {
			/* keep the reports for the next commit, in order */
			for (o = op; o->next != NULL; o = o->next)
				;
			o->next = ops;
			ops = op;
			for (ops_tail = &ops; *ops_tail != NULL;
			    ops_tail = &(*ops_tail)->next)
				;
			/* do not spin on a broken disk */
			pthread_mutex_unlock(&mu);
			usleep(100000);
			pthread_mutex_lock(&mu);
		} else {
			for (o = op; o != NULL; o = onext) {
				onext = o->next;
				op_free(o);
			}
		}
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

/*
 * Load the pending events into the queue, oldest first: from
 * pending_from on (db.c), those not done.  Events replayed while walua
 * was stopped are pending too (the replay lowered pending_from to them):
 * their replay marks are cleared in the same transaction, or the first
 * poll would queue them a second time.
 */
static int
load_pending(char *err, size_t errlen)
{
	static const char sql[] = "SELECT id, kind, conversation, message_id,"
	    " status, body, seq, attempts, due_ms FROM events e WHERE seq >= "
	    DB_PENDING_FROM " AND state = 0 AND NOT EXISTS"
	    " (SELECT 1 FROM done d WHERE d.seq = e.seq) ORDER BY seq";
	static const char clr[] = "UPDATE events SET requeue = 0"
	    " WHERE requeue = 1 AND state = 0";
	static const char last[] = "SELECT coalesce(max(seq), 0) + 1,"
	    " " DB_PENDING_FROM " FROM events";
	sqlite3_stmt	*st;
	struct event	 e;
	int64_t		 now_wall = db_now_ms(), now = queue_now_ms(), due;
	long		 n = 0;
	int		 rc;
	char		 count[32];

	if (db_exec(wdb, "BEGIN IMMEDIATE") == -1 ||
	    (st = db_prepare(wdb, sql)) == NULL) {
		snprintf(err, errlen, "inbox: %s", db_error(wdb));
		db_exec(wdb, "ROLLBACK");
		return -1;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row_event(st, &e);
		due = 0;
		if (sqlite3_column_type(st, 8) != SQLITE_NULL)
			due = now + (sqlite3_column_int64(st, 8) - now_wall);
		keep(e.seq);
		if (e.kind == NULL || e.body == NULL ||
		    queue_restore(&e, sqlite3_column_int(st, 7), due) == -1) {
			event_free(&e);
			sqlite3_reset(st);
			db_exec(wdb, "ROLLBACK");
			snprintf(err, errlen, "inbox: out of memory loading "
			    "pending events");
			return -1;
		}
		event_free(&e);		/* what queue_restore left, if held */
		n++;
	}
	sqlite3_reset(st);
	if (rc == SQLITE_DONE && (st = db_prepare(wdb, last)) != NULL &&
	    (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (sqlite3_column_int64(st, 0) > next_seq)
			next_seq = sqlite3_column_int64(st, 0);
		from_written = sqlite3_column_int64(st, 1);
		rc = SQLITE_DONE;
	}
	if (st != NULL)
		sqlite3_reset(st);
	if (rc != SQLITE_DONE || db_exec(wdb, clr) == -1 ||
	    db_exec(wdb, "COMMIT") == -1) {
		snprintf(err, errlen, "inbox: %s", db_error(wdb));
		db_exec(wdb, "ROLLBACK");
		return -1;
	}
	if (n > 0) {
		snprintf(count, sizeof(count), "%ld", n);
		log_kv(LOG_INFO, "resuming unfinished events", "#events", count,
		    NULL);
	}
	return 0;
}

/* The listener heard of another instance's new events (inbox_pg.c). */
static void
wake_to_claim(void)
{
	pthread_mutex_lock(&mu);
	claim_wanted = 1;
	pthread_cond_signal(&work_cv);
	pthread_mutex_unlock(&mu);
}

/*
 * On PostgreSQL: this instance's name (host, pid and a random part: a
 * restarted walua is a new instance), its row, the events it can claim
 * now, and the listener.
 */
static int
join_cluster(const struct config *cfg, char *err, size_t errlen)
{
	char	host[64], rnd[EVENT_ID_LEN + 1], count[32];
	long	n;

	if (gethostname(host, sizeof(host)) == -1)
		snprintf(host, sizeof(host), "walua");
	host[sizeof(host) - 1] = '\0';
	event_new_id(rnd);
	snprintf(me, sizeof(me), "%s:%ld:%s", host, (long)getpid(), rnd);
	lease_ms = cfg->cluster_lease_s * 1000;
	if (ipg_join(wdb, me, lease_ms) == -1 ||
	    ipg_takeover(wdb, me, lease_ms) == -1 ||
	    (n = ipg_claim(wdb, me)) == -1) {
		snprintf(err, errlen, "inbox: %s", db_error(wdb));
		return -1;
	}
	snprintf(count, sizeof(count), "%ld", n);
	log_kv(LOG_INFO, "cluster: joined", "instance", me, NULL);
	if (n > 0)
		log_kv(LOG_INFO, "resuming unfinished events", "#events", count,
		    NULL);
	return ipg_listen_start(cfg->database, PQbackendPID(wdb->pg),
	    wake_to_claim, err, errlen);
}

/*
 * Open the inbox in cfg->database, load what is pending into the queue
 * and start the writer.  Returns 0, or -1 with the reason in err.
 */
int
inbox_open(const struct config *cfg, char *err, size_t errlen)
{
	if ((wdb = db_open(cfg->database, cfg->durability, err, errlen)) ==
	    NULL)
		return -1;
	if ((rdb = db_open(cfg->database, cfg->durability, err, errlen)) ==
	    NULL) {
		db_close(wdb);
		wdb = NULL;
		return -1;
	}
	pg = wdb->pg != NULL;
	dedup_keep_ms = cfg->limits.dedup_ms;
	if (pg) {
		if (join_cluster(cfg, err, errlen) == -1) {
			inbox_close();
			return -1;
		}
	} else {
		/* the reader looks up a status's rank now and then */
		(void)db_exec(rdb, "PRAGMA cache_size = -256");
		/*
		 * The writer works at the tails of its b-trees: 256 KiB
		 * hold them (SQLite's default, 2 MiB, filled up under load
		 * and was 1.9 MiB of RSS; 512 and 256 KiB measured the same
		 * CPU per event, texts and statuses).
		 */
		(void)db_exec(wdb, "PRAGMA cache_size = -256");
		if (checkpoint_start(wdb, cfg->database, cfg->durability, err,
		    errlen) == -1 || load_pending(err, errlen) == -1) {
			inbox_close();
			return -1;
		}
	}
	atomic_store(&dead_count, count_dead(wdb));
	if ((errno = pthread_create(&writer, NULL, writer_main, NULL)) != 0) {
		snprintf(err, errlen, "inbox: cannot start the writer: %s",
		    strerror(errno));
		inbox_close();
		return -1;
	}
	writer_started = 1;
	return 0;
}

/* Write what is still reported, stop the writer, close. */
void
inbox_close(void)
{
	if (writer_started) {
		pthread_mutex_lock(&mu);
		stopping = 1;
		pthread_cond_signal(&work_cv);
		pthread_mutex_unlock(&mu);
		pthread_join(writer, NULL);
		writer_started = 0;
	}
	if (pg) {
		ipg_listen_stop();
		if (me[0] != '\0')
			ipg_leave(wdb, me);
		me[0] = '\0';
	} else
		checkpoint_stop();
	db_close(wdb);
	db_close(rdb);
	wdb = rdb = NULL;
	ranks_clear();
	seqset_free(&unhandled);
	next_seq = from_written = 0;
	from_ms = 0;
	untracked = 0;
}

/*
 * Hand the tickets of the list t (linked by next) to the writer (an HTTP
 * thread, at the end of its turn: the writer takes them in one group).
 * Returns 0: each t->done(t) will be called from the writer thread once
 * its commit is over, with t->rc 0 (t->nnew new events committed and
 * queued, t->ndup duplicates) or -1 (nothing stored; t->full when the
 * queue limit was the reason).  Returns -1 at once, done never called,
 * when the inbox is closing.
 */
int
inbox_submit(struct inbox_ticket *first)
{
	struct inbox_ticket	*t, *last = first;
	int			 i;

	for (t = first; t != NULL; last = t, t = t->next) {
		for (i = 0; i < t->batch->n; i++)
			split_keys(&t->batch->ev[i], &t->batch->ev[i].key,
			    &t->batch->ev[i].key2);
		t->rc = t->full = t->nnew = t->ndup = 0;
	}
	pthread_mutex_lock(&mu);
	if (stopping) {
		pthread_mutex_unlock(&mu);
		return -1;
	}
	*reqs_tail = first;
	reqs_tail = &last->next;
	pthread_cond_signal(&work_cv);
	pthread_mutex_unlock(&mu);
	return 0;
}

static void
report(int type, const struct qitem *it, int64_t due_wall,
    long long duration_us)
{
	struct op	*o;
	int		 first, debug;

	if ((o = calloc(1, sizeof(*o))) == NULL) {
		log_kv(LOG_ERROR, "inbox: out of memory recording an outcome",
		    "event", it->id, NULL);
		return;
	}
	if (type == OP_DONE)
		atomic_fetch_add(&unmarked, 1);
	o->type = type;
	memcpy(o->id, it->id, sizeof(o->id));
	o->seq = it->seq;
	o->attempts = it->attempts;
	o->due_ms = due_wall;
	o->duration_us = duration_us;
	/*
	 * Copied only where the writer reads them: the error of a failed
	 * attempt; a done mark's message id for its status rank (on
	 * PostgreSQL: on SQLite the done mark records it, kv.c); the rest
	 * for log_done's debug line (NULL fields leave it shorter).
	 */
	if (type != OP_DONE)
		o->error = it->last_error ? strdup(it->last_error) : NULL;
	else {
		o->rank = kv_rank_of(it->status);
		debug = log_enabled(LOG_DEBUG);
		if (debug) {
			o->conv = it->conv ? strdup(it->conv) : NULL;
			o->kind = it->kind ? strdup(it->kind) : NULL;
		}
		if ((debug || (o->rank > 0 && pg)) && it->message_id != NULL)
			o->message_id = strdup(it->message_id);
	}
	pthread_mutex_lock(&mu);
	first = ops == NULL;
	*ops_tail = o;
	ops_tail = &o->next;
	if (type != OP_DONE) {
		flush = 1;
		pthread_cond_signal(&work_cv);
	} else if (first)	/* an idle writer now waits MARKS_MS at most */
		pthread_cond_signal(&work_cv);
	pthread_mutex_unlock(&mu);
}

/* The supervisor's reports: it, handled; failed, retry at due; dead. */
void
inbox_done(const struct qitem *it, long long duration_us)
{
	report(OP_DONE, it, 0, duration_us);
}

/* Events handled whose done mark is not committed yet. */
int
inbox_unmarked(void)
{
	return atomic_load(&unmarked);
}

/*
 * Commit the waiting reports now: the supervisor is holding events until
 * unmarked goes down, and the writer wakes it once it has.  The caller
 * reads inbox_unmarked() again after this (pool.c's dispatch): marks
 * committed before held was set woke nobody.
 */
void
inbox_flush(void)
{
	atomic_store(&held, 1);
	pthread_mutex_lock(&mu);
	if (!flush) {
		flush = 1;
		pthread_cond_signal(&work_cv);
	}
	pthread_mutex_unlock(&mu);
}

void
inbox_retry(const struct qitem *it, int64_t due_wall_ms)
{
	report(OP_RETRY, it, due_wall_ms, 0);
}

void
inbox_dead(const struct qitem *it)
{
	atomic_fetch_add(&dead_count, 1);
	report(OP_DEAD, it, 0, 0);
}

int
inbox_healthy(void)
{
	return atomic_load(&healthy);
}

long
inbox_dead_count(void)
{
	return atomic_load(&dead_count);
}

/*
 * Status ranks handled recently, by message id: the done marks reach the
 * database a moment after the supervisor hears of them, and the next
 * status of the same message may be dispatched in that moment.  Touched by
 * the supervisor thread only.  Two generations of RANKS_GEN notes: when
 * the newer is full the older goes (its marks are in the database by
 * then), so a note lives through RANKS_GEN others at least, in a tenth of
 * the memory one table of 8,192 cleared whole took (0.8 MiB of RSS under
 * status traffic).
 */
#define RANKS_BUCKETS	1024
#define RANKS_GEN	1024	/* 50 ms of statuses at full speed; marks
				 * wait MARKS_MS at most */

struct rank {
	char		*message_id;
	uint64_t	 hash;		/* strhash(message_id) */
	int		 rank;
	struct rank	*next;
};

static struct rank	*ranks[2][RANKS_BUCKETS];	/* newer, older */
static int		 nranks;			/* in the newer */

static void
ranks_free(struct rank **gen)
{
	struct rank	*r, *next;
	int		 i;

	for (i = 0; i < RANKS_BUCKETS; i++) {
		for (r = gen[i]; r != NULL; r = next) {
			next = r->next;
			free(r->message_id);
			free(r);
		}
		gen[i] = NULL;
	}
}

/* The newer generation becomes the older; the older goes. */
static void
ranks_turn(void)
{
	ranks_free(ranks[1]);
	memcpy(ranks[1], ranks[0], sizeof(ranks[0]));
	memset(ranks[0], 0, sizeof(ranks[0]));
	nranks = 0;
	atomic_fetch_add(&rank_epoch, 1);
}

static void
ranks_clear(void)
{
	ranks_free(ranks[0]);
	ranks_free(ranks[1]);
	nranks = 0;
	atomic_fetch_add(&rank_epoch, 2);	/* both generations gone */
}

/* The note of message_id (of hash h) in both generations, or NULL. */
static struct rank *
rank_find(const char *message_id, uint64_t h)
{
	struct rank	*r;
	int		 gen;

	/* ids share long prefixes: strcmp only where the hashes agree */
	for (gen = 0; gen < 2; gen++)
		for (r = ranks[gen][h % RANKS_BUCKETS]; r != NULL;
		    r = r->next)
			if (r->hash == h &&
			    strcmp(r->message_id, message_id) == 0)
				return r;
	return NULL;
}

/* The supervisor heard that a status of rank was handled. */
void
inbox_note_rank(const char *message_id, int rank)
{
	struct rank	*r;
	uint64_t	 h;

	if (message_id == NULL || rank <= 0)
		return;
	h = strhash(message_id);
	if ((r = rank_find(message_id, h)) != NULL) {
		if (rank > r->rank)
			r->rank = rank;
		return;
	}
	if (nranks >= RANKS_GEN)
		ranks_turn();
	if ((r = calloc(1, sizeof(*r))) == NULL ||
	    (r->message_id = strdup(message_id)) == NULL) {
		free(r);
		return;
	}
	r->hash = h;
	r->rank = rank;
	r->next = ranks[0][h % RANKS_BUCKETS];
	ranks[0][h % RANKS_BUCKETS] = r;
	nranks++;
}

/*
 * The highest status rank already handled for its message (ev.stale).
 * What was handled since it was committed is in the cache (noted before
 * its done mark is written); what was handled before, the writer read in
 * that commit (it->prior_rank).  A note made after that commit is gone
 * only after two turns of the generations; then, or for events loaded
 * from the database, the database is asked here.  The supervisor thread
 * only (it owns the reader connection).
 */
int
inbox_handled_rank(const struct qitem *it)
{
	struct rank	*r;
	int		 rank = -1;

	if ((r = rank_find(it->message_id, strhash(it->message_id))) != NULL)
		rank = r->rank;
	if (it->prior_rank >= 0 &&
	    atomic_load(&rank_epoch) - it->prior_epoch <= 1)
		return it->prior_rank > rank ? it->prior_rank : rank;
	if (rank >= 0)
		return rank;
	return rdb != NULL ? kv_status_rank(rdb, it->message_id,
	    LLONG_MAX) : 0;
}
