/*
 * inbox_pg.c - the inbox on PostgreSQL, shared by several walua
 * instances (README, "Running several instances").
 *
 * The writer (inbox.c) commits deliveries as on SQLite: one transaction
 * per group, the insert of an event is the claim of its dedup keys
 * (unique columns), so a delivery posted to two instances at once is
 * stored once: the second insert waits for the first transaction and
 * then finds the key taken.  New events are stored without an owner.
 *
 * Who handles what:
 * - instances: each running walua has a row, renewed every lease_s / 3
 *   and alive until expires_ms (the database's clock).
 * - leases: an instance that holds a conversation's lease is the only
 *   one to handle its events; a lease lasts while its holder is alive
 *   and has unfinished events of that conversation.
 * - claim: an instance takes the leases of conversations with events
 *   nobody owns (unless another live instance holds them), then owns
 *   those events (events.owner) and queues them in arrival order.  It
 *   claims in each commit of new events (its own, mostly), and when
 *   events are left that nobody owns (a conversation another instance
 *   holds), the commit notifies the others (LISTEN/NOTIFY on
 *   walua_events): each claims then.  Also every half second (replays,
 *   a notification missed while reconnecting) and after a takeover.
 * - takeover: at each renewal, the events owned by an instance whose row
 *   expired lose their owner, and its leases go; the next claim (of any
 *   instance) takes them.
 * - leave: an instance that stops gives up its events and leases at
 *   once, so another resumes them without waiting for the expiry.
 * The guarantees and their limits are in the README.
 */
#include "inbox_pg.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "db_pg.h"
#include "log.h"
#include "queue.h"

#define DBNOW		"(extract(epoch from clock_timestamp()) * 1000)::bigint"
#define CLAIM_MAX	"1000"		/* conversations per claim */
#define TAKEOVER_LOCK	"7215302"	/* one instance takes over at a time */
#define KEYS_LOCK	"72153"		/* with a key's hash: one stores it */
#define CHANNEL		"walua_events"

/* A returned row's column as a fresh string, or NULL. */
static char *
column(const PGresult *res, int row, int col)
{
	if (PQgetisnull(res, row, col))
		return NULL;
	return strdup(PQgetvalue(res, row, col));
}

int
ipg_insert(struct db *d, const char *provider, const char *endpoint,
    const struct event *e, const char *key, const char *key2, int64_t now)
{
	static const char sql[] = "INSERT INTO events (id, provider, endpoint,"
	    " kind, conversation, message_id, status, dedup, dedup2, body,"
	    " acked_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
	    " ON CONFLICT DO NOTHING";
	const char	*v[11];
	int		 len[11] = { 0 }, fmt[11] = { 0 };
	char		 acked[24];
	PGresult	*res;
	int		 n;

	snprintf(acked, sizeof(acked), "%lld", (long long)now);
	v[0] = e->id;
	v[1] = provider;
	v[2] = endpoint;
	v[3] = e->kind;
	v[4] = e->conversation;
	v[5] = e->message_id;
	v[6] = e->status;
	v[7] = key;
	v[8] = key2;
	v[9] = e->body;			/* packed: bytes, sent as they are */
	len[9] = (int)e->bodylen;
	fmt[9] = 1;
	v[10] = acked;
	if ((res = pg_run(d, sql, 11, v, len, fmt)) == NULL)
		return -1;
	n = atoi(PQcmdTuples(res));
	PQclear(res);
	return n;
}

/*
 * Before a group's inserts: lock its dedup keys (keys: one a line), in
 * one order for every instance.  Two instances storing the same keys in
 * opposite orders would otherwise deadlock in the unique index, and
 * PostgreSQL, after a second, would fail one of them; now the second
 * waits for the first's commit and finds the keys taken.
 */
int
ipg_lock_keys(struct db *d, const char *keys)
{
	static const char sql[] = "SELECT pg_advisory_xact_lock(" KEYS_LOCK
	    ", k) FROM (SELECT DISTINCT hashtext(x) AS k FROM"
	    " string_to_table($1, E'\\n') x ORDER BY k OFFSET 0) s";
	PGresult	*res;

	if ((res = pg_run(d, sql, 1, &keys, NULL, NULL)) == NULL)
		return -1;
	PQclear(res);
	return 0;
}

/* As release_expired in inbox.c: 0 live duplicate, 1 released, -1. */
int
ipg_release_expired(struct db *d, const char *key, const char *key2,
    int64_t since)
{
	static const char live[] = "SELECT count(*) FROM events WHERE"
	    " (dedup = $1 OR dedup2 = $2) AND acked_ms >= $3";
	static const char rel[] = "UPDATE events SET dedup = NULL"
	    " WHERE dedup = $1";
	static const char rel2[] = "UPDATE events SET dedup2 = NULL"
	    " WHERE dedup2 = $1";
	const char	*v[3] = { key, key2, NULL };
	char		 s[24];
	PGresult	*res;
	long		 n;

	snprintf(s, sizeof(s), "%lld", (long long)since);
	v[2] = s;
	if ((res = pg_run(d, live, 3, v, NULL, NULL)) == NULL)
		return -1;
	n = atol(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (n > 0)
		return 0;
	if ((key != NULL && pg_cmd(d, rel, 1, &key) == -1) ||
	    (key2 != NULL && pg_cmd(d, rel2, 1, &key2) == -1))
		return -1;
	return 1;
}

/* An outcome: 0 done, 1 failed (retry at ms), 2 dead. */
int
ipg_outcome(struct db *d, int type, const char *id, int attempts,
    int64_t ms, const char *error)
{
	static const char done_sql[] = "UPDATE events SET state = 1,"
	    " attempts = $2, done_ms = $3, due_ms = NULL WHERE id = $1";
	static const char retry_sql[] = "UPDATE events SET attempts = $2,"
	    " due_ms = $3, last_error = $4 WHERE id = $1";
	static const char dead_sql[] = "UPDATE events SET state = 2,"
	    " attempts = $2, done_ms = $3, last_error = $4, due_ms = NULL"
	    " WHERE id = $1";
	static const char attempt_sql[] = "INSERT INTO attempts (event_id,"
	    " attempt, error, ms) VALUES ($1, $2, $3, $4)";
	const char	*v[4];
	char		 a[16], t[24], now[24];

	snprintf(a, sizeof(a), "%d", attempts);
	snprintf(t, sizeof(t), "%lld", (long long)ms);
	v[0] = id;
	v[1] = a;
	v[2] = t;
	v[3] = error;
	if (pg_cmd(d, type == 0 ? done_sql : type == 1 ? retry_sql : dead_sql,
	    type == 0 ? 3 : 4, v) == -1)
		return -1;
	if (type == 0)
		return 0;
	/* a failed attempt, for the console's event page */
	snprintf(now, sizeof(now), "%lld", (long long)db_now_ms());
	v[2] = error;
	v[3] = now;
	return pg_cmd(d, attempt_sql, 4, v) == -1 ? -1 : 0;
}

long
ipg_count_dead(struct db *d)
{
	static const char sql[] = "SELECT count(*) FROM events WHERE state = 2";
	PGresult	*res;
	long		 n;

	if ((res = pg_run(d, sql, 0, NULL, NULL, NULL)) == NULL)
		return 0;
	n = atol(PQgetvalue(res, 0, 0));
	PQclear(res);
	return n;
}

/* While unhealthy: connect again if need be, then try a real write. */
int
ipg_probe(struct db *d)
{
	static const char sql[] = "INSERT INTO meta (key, value) VALUES"
	    " ('probe', $1) ON CONFLICT (key) DO UPDATE SET value = $1";
	char		 now[24];
	const char	*v[1] = { now };

	if (!pg_alive(d) && pg_reconnect(d) == -1)
		return -1;
	snprintf(now, sizeof(now), "%lld", (long long)db_now_ms());
	return pg_cmd(d, sql, 1, v) == -1 ? -1 : 0;
}

/*
 * Where this process runs, as far as its pids mean anything: the
 * kernel's boot id and the pid namespace.  Two instances of one node
 * can tell whether the other's process is still there.
 */
static void
node_name(char *buf, size_t len)
{
	char	boot[64] = "", ns[64] = "";
	FILE	*f;
	ssize_t	 n;

	if ((f = fopen("/proc/sys/kernel/random/boot_id", "r")) != NULL) {
		if (fgets(boot, sizeof(boot), f) == NULL)
			boot[0] = '\0';
		boot[strcspn(boot, "\n")] = '\0';
		fclose(f);
	}
	if ((n = readlink("/proc/self/ns/pid", ns, sizeof(ns) - 1)) > 0)
		ns[n] = '\0';
	snprintf(buf, len, "%s/%s", boot, ns);
}

/*
 * An earlier instance of this node whose process is gone (a walua killed
 * and started again by its supervisor) need not wait for its expiry:
 * it is expired now, and the takeover that follows frees its events.
 */
static int
expire_gone(struct db *d, const char *me, const char *node)
{
	static const char sel[] = "SELECT id, pid FROM instances WHERE"
	    " node = $1 AND id <> $2 AND pid IS NOT NULL";
	static const char expire[] = "UPDATE instances SET expires_ms = 0"
	    " WHERE id = $1";
	const char	*v[2] = { node, me };
	PGresult	*res;
	int		 i, rc = 0;
	pid_t		 pid;

	if ((res = pg_run(d, sel, 2, v, NULL, NULL)) == NULL)
		return -1;
	for (i = 0; i < PQntuples(res) && rc == 0; i++) {
		pid = (pid_t)atol(PQgetvalue(res, i, 1));
		if (pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		v[0] = PQgetvalue(res, i, 0);
		rc = pg_cmd(d, expire, 1, v) == -1 ? -1 : 0;
	}
	PQclear(res);
	return rc;
}

/* This instance starts: its row, alive for lease_ms. */
int
ipg_join(struct db *d, const char *me, int lease_ms)
{
	static const char sql[] = "INSERT INTO instances (id, expires_ms,"
	    " node, pid) VALUES ($1, " DBNOW " + $2, $3, $4) ON CONFLICT (id)"
	    " DO UPDATE SET expires_ms = EXCLUDED.expires_ms";
	char		 l[16], node[160], pid[24];
	const char	*v[4] = { me, l, node, pid };

	snprintf(l, sizeof(l), "%d", lease_ms);
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	node_name(node, sizeof(node));
	if (pg_cmd(d, sql, 4, v) == -1)
		return -1;
	return expire_gone(d, me, node);
}

/*
 * The renewal, every lease_s / 3: this instance stays alive; the leases
 * it holds on conversations with nothing unfinished go; the events of
 * instances past their expiry lose their owner (one instance does it at
 * a time).  Returns the events freed for claiming, or -1.
 */
int
ipg_takeover(struct db *d, const char *me, int lease_ms)
{
	static const char renew[] = "UPDATE instances SET expires_ms = "
	    DBNOW " + $2 WHERE id = $1";
	static const char idle[] = "DELETE FROM leases l WHERE l.owner = $1"
	    " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.state = 0"
	    " AND e.conversation = l.conversation)";
	static const char lock[] = "SELECT pg_try_advisory_xact_lock("
	    TAKEOVER_LOCK ")";
	static const char take[] = "WITH gone AS (DELETE FROM instances"
	    " WHERE expires_ms < " DBNOW " RETURNING id),"
	    " ev AS (UPDATE events e SET owner = NULL WHERE e.state = 0 AND"
	    " e.owner IS NOT NULL AND NOT EXISTS (SELECT 1 FROM instances i"
	    " WHERE i.id = e.owner AND i.expires_ms >= " DBNOW ") RETURNING 1),"
	    " ls AS (DELETE FROM leases l WHERE NOT EXISTS (SELECT 1 FROM"
	    " instances i WHERE i.id = l.owner AND i.expires_ms >= " DBNOW
	    ") RETURNING 1)"
	    " SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM ev)";
	char		 l[16];
	const char	*v[2] = { me, l };
	PGresult	*res;
	long		 n;
	int		 freed = 0;

	snprintf(l, sizeof(l), "%d", lease_ms);
	if ((n = pg_cmd(d, renew, 2, v)) == -1)
		return -1;
	if (n == 0) {
		/* taken for dead (paused past its expiry): its events may
		 * be running elsewhere now; come back and say so */
		log_kv(LOG_WARN, "cluster: this instance had expired; its "
		    "unfinished events may run again elsewhere", "instance",
		    me, NULL);
		if (ipg_join(d, me, lease_ms) == -1)
			return -1;
	}
	if (pg_cmd(d, idle, 1, v) == -1 || db_exec(d, "BEGIN") == -1)
		return -1;
	if ((res = pg_run(d, lock, 0, NULL, NULL, NULL)) == NULL)
		goto fail;
	n = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (n) {
		if ((res = pg_run(d, take, 0, NULL, NULL, NULL)) == NULL)
			goto fail;
		freed = atoi(PQgetvalue(res, 0, 1));
		if (atoi(PQgetvalue(res, 0, 0)) > 0 || freed > 0)
			log_kv(LOG_WARN, "cluster: taking over the events of "
			    "an instance that stopped renewing", "#instances",
			    PQgetvalue(res, 0, 0), "#events",
			    PQgetvalue(res, 0, 1), NULL);
		PQclear(res);
	}
	if (db_exec(d, "COMMIT") == -1)
		goto fail;
	return freed;
fail:
	db_exec(d, "ROLLBACK");
	return -1;
}

/*
 * In the caller's transaction: take the leases of conversations with
 * events nobody owns, then own those events (and those without a
 * conversation).  The events, oldest first, for ipg_claim_queue once the
 * transaction is committed; NULL on error.
 */
PGresult *
ipg_claim_take(struct db *d, const char *me)
{
	static const char lease[] = "INSERT INTO leases (conversation, owner)"
	    " SELECT DISTINCT conversation, $1::text FROM events WHERE"
	    " state = 0 AND owner IS NULL AND conversation IS NOT NULL"
	    " ORDER BY 1 LIMIT " CLAIM_MAX " ON CONFLICT (conversation)"
	    " DO NOTHING";
	static const char own[] = "WITH c AS (UPDATE events e SET owner = $1"
	    " WHERE e.state = 0 AND e.owner IS NULL AND"
	    " (e.conversation IS NULL OR EXISTS (SELECT 1 FROM leases l WHERE"
	    " l.conversation = e.conversation AND l.owner = $1))"
	    " RETURNING e.seq, e.id, e.kind, e.conversation, e.message_id,"
	    " e.status, e.body, e.attempts, e.due_ms, e.requeue)"
	    " SELECT id, kind, conversation, message_id, status, body,"
	    " attempts, due_ms, requeue FROM c ORDER BY seq";
	/* replay marks: read (logged once queued), then cleared */
	static const char clear[] = "UPDATE events SET requeue = 0"
	    " WHERE owner = $1 AND requeue = 1";
	const char	*v[1] = { me };
	PGresult	*res;
	int		 i;

	if (pg_cmd(d, lease, 1, v) == -1 ||
	    (res = pg_run(d, own, 1, v, NULL, NULL)) == NULL)
		return NULL;
	for (i = 0; i < PQntuples(res); i++)
		if (strcmp(PQgetvalue(res, i, 8), "1") == 0) {
			if (pg_cmd(d, clear, 1, v) == -1) {
				PQclear(res);
				return NULL;
			}
			break;
		}
	return res;
}

/* In the caller's transaction: are there events nobody owns? */
int
ipg_unowned(struct db *d)
{
	static const char sql[] = "SELECT 1 FROM events WHERE state = 0"
	    " AND owner IS NULL LIMIT 1";
	PGresult	*res;
	int		 n;

	if ((res = pg_run(d, sql, 0, NULL, NULL, NULL)) == NULL)
		return 1;
	n = PQntuples(res);
	PQclear(res);
	return n > 0;
}

/* Queue the events ipg_claim_take owned (now committed); frees res. */
long
ipg_claim_queue(PGresult *res)
{
	struct event	 e;
	unsigned char	*body;
	size_t		 len;
	int64_t		 now_wall = db_now_ms(), now = queue_now_ms(), due;
	long		 n = 0;
	int		 i, rows, rc;

	rows = PQntuples(res);
	for (i = 0; i < rows; i++) {
		memset(&e, 0, sizeof(e));
		e.prior_rank = -1;
		snprintf(e.id, sizeof(e.id), "%s", PQgetvalue(res, i, 0));
		e.kind = column(res, i, 1);
		e.conversation = column(res, i, 2);
		e.message_id = column(res, i, 3);
		e.status = column(res, i, 4);
		body = PQunescapeBytea((const unsigned char *)PQgetvalue(res,
		    i, 5), &len);
		if (body != NULL && (e.body = malloc(len + 1)) != NULL) {
			memcpy(e.body, body, len);
			e.body[len] = '\0';
			e.bodylen = len;
		}
		PQfreemem(body);
		due = 0;
		if (!PQgetisnull(res, i, 7))
			due = now + (atoll(PQgetvalue(res, i, 7)) - now_wall);
		/* owned now: if it cannot be queued, the next start or a
		 * takeover resumes it */
		if (e.kind == NULL || e.body == NULL || (rc = queue_restore(&e,
		    atoi(PQgetvalue(res, i, 6)), due)) == -1)
			log_kv(LOG_ERROR, "cluster: out of memory queueing a "
			    "claimed event", "event", e.id, NULL);
		else if (rc == 0) {
			n++;
			if (strcmp(PQgetvalue(res, i, 8), "1") == 0)
				log_kv(LOG_INFO, "event replayed", "event", e.id,
				    NULL);
		}
		event_free(&e);
	}
	PQclear(res);
	if (n > 0 && log_enabled(LOG_DEBUG)) {
		char count[24];

		snprintf(count, sizeof(count), "%ld", n);
		log_kv(LOG_DEBUG, "cluster: events claimed", "#events", count,
		    NULL);
	}
	return n;
}

/* A claim of its own: events other instances stored, replays, takeovers. */
long
ipg_claim(struct db *d, const char *me)
{
	PGresult	*res;

	if (db_exec(d, "BEGIN") == -1)
		return -1;
	if ((res = ipg_claim_take(d, me)) == NULL) {
		db_exec(d, "ROLLBACK");
		return -1;
	}
	if (db_exec(d, "COMMIT") == -1) {
		PQclear(res);
		db_exec(d, "ROLLBACK");
		return -1;
	}
	return ipg_claim_queue(res);
}

/* This instance stops: its events and leases are free for the others. */
void
ipg_leave(struct db *d, const char *me)
{
	static const char ev[] = "UPDATE events SET owner = NULL"
	    " WHERE owner = $1 AND state = 0";
	static const char ls[] = "DELETE FROM leases WHERE owner = $1";
	static const char in[] = "DELETE FROM instances WHERE id = $1";
	const char	*v[1] = { me };

	if (!pg_alive(d) || db_exec(d, "BEGIN") == -1)
		return;
	if (pg_cmd(d, ev, 1, v) == -1 || pg_cmd(d, ls, 1, v) == -1 ||
	    pg_cmd(d, in, 1, v) == -1 || db_exec(d, "NOTIFY " CHANNEL) == -1 ||
	    db_exec(d, "COMMIT") == -1)
		db_exec(d, "ROLLBACK");
}

/*
 * The listener: its own connection, LISTENing on walua_events; another
 * instance's commit of new events wakes the writer to claim.  A lost
 * connection is made again (after a pause, growing to 5 s), and the
 * writer is woken then, for what it may have missed.
 */
static pthread_t	 listener;
static int		 listening;
static int		 stop_pipe[2] = { -1, -1 };
static char		*listen_url;
static atomic_int	 self_pid;
static void		 (*wake_fn)(void);

static PGconn *
listen_connect(void)
{
	static const char *keys[] = { "dbname", "application_name",
	    "connect_timeout", NULL };
	const char	*vals[] = { listen_url, "walua-listener", "5", NULL };
	PGconn		*c;
	PGresult	*res;

	if ((c = PQconnectdbParams(keys, vals, 1)) == NULL)
		return NULL;
	if (PQstatus(c) == CONNECTION_OK) {
		res = PQexec(c, "LISTEN " CHANNEL);
		if (PQresultStatus(res) == PGRES_COMMAND_OK) {
			PQclear(res);
			return c;
		}
		PQclear(res);
	}
	PQfinish(c);
	return NULL;
}

static void *
listen_main(void *arg)
{
	PGconn		*c = NULL;
	PGnotify	*n;
	struct pollfd	 pfd[2];
	int		 pause_ms = 100, heard;

	(void)arg;
	pthread_setname_np(pthread_self(), "inbox-listener");
	for (;;) {
		if (c == NULL || PQstatus(c) != CONNECTION_OK) {
			if (c != NULL)
				PQfinish(c);
			if ((c = listen_connect()) == NULL) {
				pfd[0].fd = stop_pipe[0];
				pfd[0].events = POLLIN;
				if (poll(pfd, 1, pause_ms) > 0)
					break;
				if ((pause_ms *= 2) > 5000)
					pause_ms = 5000;
				continue;
			}
			pause_ms = 100;
			wake_fn();
		}
		pfd[0].fd = stop_pipe[0];
		pfd[0].events = POLLIN;
		pfd[1].fd = PQsocket(c);
		pfd[1].events = POLLIN;
		if (poll(pfd, 2, 1000) == -1 && errno != EINTR)
			break;
		if (pfd[0].revents != 0)
			break;
		if (pfd[1].revents == 0)
			continue;
		if (!PQconsumeInput(c))
			continue;	/* lost: made again above */
		heard = 0;
		while ((n = PQnotifies(c)) != NULL) {
			heard |= n->be_pid != atomic_load(&self_pid);
			PQfreemem(n);
		}
		if (heard)
			wake_fn();
	}
	if (c != NULL)
		PQfinish(c);
	return NULL;
}

/* writer_pid: the writer's own notifications are not news to it. */
int
ipg_listen_start(const char *url, int writer_pid, void (*wake)(void),
    char *err, size_t errlen)
{
	atomic_store(&self_pid, writer_pid);
	wake_fn = wake;
	if ((listen_url = strdup(url)) == NULL || pipe(stop_pipe) == -1) {
		snprintf(err, errlen, "inbox: cannot start the listener: %s",
		    strerror(errno));
		free(listen_url);
		listen_url = NULL;
		return -1;
	}
	if ((errno = pthread_create(&listener, NULL, listen_main, NULL)) !=
	    0) {
		snprintf(err, errlen, "inbox: cannot start the listener: %s",
		    strerror(errno));
		ipg_listen_stop();
		return -1;
	}
	listening = 1;
	return 0;
}

void
ipg_listen_self(int writer_pid)
{
	atomic_store(&self_pid, writer_pid);
}

void
ipg_listen_stop(void)
{
	if (listening) {
		(void)write(stop_pipe[1], "x", 1);
		pthread_join(listener, NULL);
		listening = 0;
	}
	if (stop_pipe[0] != -1) {
		close(stop_pipe[0]);
		close(stop_pipe[1]);
		stop_pipe[0] = stop_pipe[1] = -1;
	}
	free(listen_url);
	listen_url = NULL;
}
