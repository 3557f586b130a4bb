/*
 * guard.c - the public listener's connections, as libmicrohttpd reports
 * them to httpd.c: a deadline for each request head, the per-address
 * limit, room for real work when connections run short, and idle
 * connections closed at once on stop.
 *
 * libmicrohttpd 0.9.75 tells the application nothing until a request head
 * is complete, and every byte resets its idle timer: a client sending its
 * head a byte at a time holds the connection as long as it likes.  So
 * walua follows each connection from its open notification.  A connection
 * *waits* while it has no complete head: from its open to its first head,
 * and on a kept-alive connection from the end of one request to the head
 * of the next.  Waiting ones are on one of two lists in the order they
 * began to wait (first heads; kept-alive ones), so each list is in
 * deadline order too, and on their address's list.  A timer thread shuts
 * down (shutdown(2)) the socket of each one past its deadline;
 * libmicrohttpd then reads the end of the stream and closes the
 * connection on its own thread.  A connection with a complete head (a
 * request being read, handled, waiting for its commit, answered) is never
 * shut down here.
 *
 * Everything is under one mutex, and libmicrohttpd reports a close
 * (guard_close) before it closes the socket: a socket is shut down only
 * while its connection is tracked, never once a later connection may
 * reuse the descriptor.
 */
#include "guard.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "log.h"
#include "metrics.h"

enum { G_WAITING, G_BUSY, G_SHUT };

/* Why a waiting connection was shut down; -1: not counted (idle, stop). */
enum { R_HEAD, R_ROOM, R_PER_IP, R_COUNT };

static const char *const reason_label[R_COUNT] = {
	"reason=\"header_timeout\"", "reason=\"room\"", "reason=\"per_ip\""
};

#define TICK_MS		50	/* the timer wakes at most this often */
#define SUMMARY_MS	1000	/* one log line of closes a second at most */
#define QUIET_SLACK_MS	10	/* TCP_INFO counts in jiffies */

/* One client address: its connections, its waiting ones oldest first. */
struct guard_addr {
	unsigned char		 key[16];
	int			 keylen;
	int			 nconns;	/* tracked */
	int			 live;		/* of them, not shut down */
	struct guard_conn	*first, *last;
	struct guard_addr	*next;		/* hash chain */
};

struct guard_conn {
	int			 fd;
	int			 state;		/* G_* */
	int			 kept;		/* waits for a later head */
	int64_t			 since_ms;	/* began to wait */
	int64_t			 deadline_ms;
	struct guard_addr	*a;
	struct guard_conn	*prev, *next;	/* on heads or kept */
	struct guard_conn	*aprev, *anext;	/* on a's list */
};

struct list {
	struct guard_conn	*first, *last;
};

static pthread_mutex_t	 mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	 cv;		/* the timer's: stop, a summary due */
static pthread_t	 timer;
static int		 running, stopping, draining;
static struct guard_limits lim;
static int		 room;		/* live connections before evicting */
static struct list	 heads, kept;
static int		 live;		/* tracked and not shut down */
static int		 tracked;	/* open: shut down or not */
static struct guard_addr **buckets;
static size_t		 nbuckets;	/* a power of two */
static uint32_t		 seed;
static long		 closed[R_COUNT];	/* since the last summary */
static int		 pending;	/* closed[] has counts */

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Connections libmicrohttpd may hold before the oldest waiting ones make
 * room: a sixteenth is kept free, since a shut down connection is freed a
 * moment later, on libmicrohttpd's thread, and each of its threads takes
 * an equal share of max_conns (a thread at its share accepts nothing).
 */
int
guard_room(int max_conns)
{
	int spare = max_conns / 16;

	return max_conns - (spare > 0 ? spare : 1);
}

/* FNV-1a, seeded per process: addresses are chosen by the clients. */
static size_t
addr_hash(const unsigned char *k, int len)
{
	uint32_t	h = 2166136261u ^ seed;
	int		i;

	for (i = 0; i < len; i++) {
		h ^= k[i];
		h *= 16777619u;
	}
	return h & (nbuckets - 1);
}

/* The entry of sa's address, made if new; NULL when out of memory. */
static struct guard_addr *
addr_get(const struct sockaddr *sa)
{
	unsigned char		 key[16];
	int			 len = 0;
	struct guard_addr	*a;
	size_t			 h;

	if (sa != NULL && sa->sa_family == AF_INET) {
		memcpy(key, &((const struct sockaddr_in *)(const void *)sa)->
		    sin_addr, 4);
		len = 4;
	} else if (sa != NULL && sa->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)(const void *)sa)->
		    sin6_addr, 16);
		len = 16;
	}
	h = addr_hash(key, len);
	for (a = buckets[h]; a != NULL; a = a->next)
		if (a->keylen == len && memcmp(a->key, key, (size_t)len) == 0)
			return a;
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return NULL;
	memcpy(a->key, key, (size_t)len);
	a->keylen = len;
	a->next = buckets[h];
	buckets[h] = a;
	return a;
}

/* Free a once no connection of its address is tracked. */
static void
addr_put(struct guard_addr *a)
{
	struct guard_addr **pp;

	if (a->nconns > 0)
		return;
	for (pp = &buckets[addr_hash(a->key, a->keylen)]; *pp != a;
	    pp = &(*pp)->next)
		;
	*pp = a->next;
	free(a);
}

/* c begins to wait for a head: its first (kept 0) or a later one. */
static void
wait_link(struct guard_conn *c, int is_kept)
{
	struct list		*l = is_kept ? &kept : &heads;
	struct guard_addr	*a = c->a;

	c->state = G_WAITING;
	c->kept = is_kept;
	c->since_ms = now_ms();
	c->deadline_ms = c->since_ms + (is_kept ? lim.kept_ms : lim.head_ms);
	c->next = NULL;
	if ((c->prev = l->last) != NULL)
		l->last->next = c;
	else
		l->first = c;
	l->last = c;
	c->anext = NULL;
	if ((c->aprev = a->last) != NULL)
		a->last->anext = c;
	else
		a->first = c;
	a->last = c;
}

static void
wait_unlink(struct guard_conn *c)
{
	struct list		*l = c->kept ? &kept : &heads;
	struct guard_addr	*a = c->a;

	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		l->first = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	else
		l->last = c->prev;
	if (c->aprev != NULL)
		c->aprev->anext = c->anext;
	else
		a->first = c->anext;
	if (c->anext != NULL)
		c->anext->aprev = c->aprev;
	else
		a->last = c->aprev;
	c->prev = c->next = c->aprev = c->anext = NULL;
}

/* Shut a waiting connection down; libmicrohttpd closes it next. */
static void
shut(struct guard_conn *c, int reason)
{
	wait_unlink(c);
	c->state = G_SHUT;
	live--;
	c->a->live--;
	shutdown(c->fd, SHUT_RDWR);
	if (reason >= 0) {
		closed[reason]++;
		if (!pending) {
			pending = 1;
			pthread_cond_signal(&cv);
		}
	}
}

/*
 * Whether nothing arrived on c since it began to wait (an idle kept-alive
 * connection, or one that has sent nothing yet), by the kernel's time of
 * the last data received.  When that cannot be read, quiet.
 */
static int
quiet(const struct guard_conn *c, int64_t now)
{
	struct tcp_info	ti;
	socklen_t	len = sizeof(ti);

	if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1 ||
	    len < offsetof(struct tcp_info, tcpi_last_data_recv) +
	    sizeof(ti.tcpi_last_data_recv))
		return 1;
	return (int64_t)ti.tcpi_last_data_recv + QUIET_SLACK_MS >=
	    now - c->since_ms;
}

/* The connection that has waited longest for a head, or NULL. */
static struct guard_conn *
oldest(void)
{
	struct guard_conn *h = heads.first, *k = kept.first;

	if (h == NULL || (k != NULL && k->since_ms < h->since_ms))
		return k;
	return h;
}

/* Log and count what was shut down since the last time.  Not under mu. */
static void
summarize(const long *n)
{
	char	v[R_COUNT][24];
	int	i;

	for (i = 0; i < R_COUNT; i++) {
		snprintf(v[i], sizeof(v[i]), "%ld", n[i]);
		if (n[i] > 0)
			metrics_inc("walua_http_connections_closed_total",
			    reason_label[i], (double)n[i]);
	}
	log_kv(LOG_WARN, "connections without a complete request head "
	    "closed", "#header_timeout", n[R_HEAD] ? v[R_HEAD] : NULL,
	    "#room", n[R_ROOM] ? v[R_ROOM] : NULL, "#per_ip", n[R_PER_IP] ?
	    v[R_PER_IP] : NULL, NULL);
}

/*
 * The timer: shut down the waiting connections past their deadline, and
 * say what was shut down, once a second at most.  It sleeps until the
 * first deadline; one that begins later is at least head_ms away.
 */
static void *
timer_main(void *arg)
{
	struct guard_conn	*c;
	struct timespec		 ts;
	long			 n[R_COUNT];
	int64_t			 now, wake, last_summary = 0;
	int			 i;

	(void)arg;
	pthread_mutex_lock(&mu);
	while (!stopping) {
		now = now_ms();
		while ((c = heads.first) != NULL && c->deadline_ms <= now)
			shut(c, R_HEAD);
		/* a quiet kept-alive one is merely idle: its end, not ours */
		while ((c = kept.first) != NULL && c->deadline_ms <= now)
			shut(c, quiet(c, now) ? -1 : R_HEAD);
		if (pending && now - last_summary >= SUMMARY_MS) {
			for (i = 0; i < R_COUNT; i++) {
				n[i] = closed[i];
				closed[i] = 0;
			}
			pending = 0;
			last_summary = now;
			pthread_mutex_unlock(&mu);
			summarize(n);
			pthread_mutex_lock(&mu);
			continue;
		}
		wake = now + lim.head_ms;
		if (heads.first != NULL && heads.first->deadline_ms < wake)
			wake = heads.first->deadline_ms;
		if (kept.first != NULL && kept.first->deadline_ms < wake)
			wake = kept.first->deadline_ms;
		if (pending && last_summary + SUMMARY_MS < wake)
			wake = last_summary + SUMMARY_MS;
		if (wake < now + TICK_MS)
			wake = now + TICK_MS;
		ts.tv_sec = (time_t)(wake / 1000);
		ts.tv_nsec = (long)(wake % 1000) * 1000000L;
		pthread_cond_timedwait(&cv, &mu, &ts);
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

/*
 * Start tracking with these limits (before libmicrohttpd starts).
 * Returns 0, or -1 with the reason in err.
 */
int
guard_start(const struct guard_limits *l, char *err, size_t errlen)
{
	pthread_condattr_t	at;
	size_t			n = 64;

	lim = *l;
	room = guard_room(l->max_conns);
	while (n < (size_t)l->max_conns && n < 65536)
		n *= 2;
	if ((buckets = calloc(n, sizeof(*buckets))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	nbuckets = n;
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = (uint32_t)now_ms();
	pthread_condattr_init(&at);
	pthread_condattr_setclock(&at, CLOCK_MONOTONIC);
	pthread_cond_init(&cv, &at);
	pthread_condattr_destroy(&at);
	stopping = draining = pending = 0;
	memset(closed, 0, sizeof(closed));
	if ((errno = pthread_create(&timer, NULL, timer_main, NULL)) != 0) {
		snprintf(err, errlen, "cannot start a thread: %s",
		    strerror(errno));
		pthread_cond_destroy(&cv);
		free(buckets);
		buckets = NULL;
		return -1;
	}
	running = 1;
	return 0;
}

/* Stop the timer and free what is left (libmicrohttpd has stopped). */
void
guard_stop(void)
{
	long	n[R_COUNT];
	size_t	i;
	int	j;

	if (!running)
		return;
	pthread_mutex_lock(&mu);
	stopping = 1;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
	pthread_join(timer, NULL);
	running = 0;
	for (j = 0; j < R_COUNT; j++)
		n[j] = closed[j];
	if (pending)
		summarize(n);
	for (i = 0; i < nbuckets; i++)		/* none, once all are closed */
		while (buckets[i] != NULL) {
			struct guard_addr *a = buckets[i];

			buckets[i] = a->next;
			free(a);
		}
	free(buckets);
	buckets = NULL;
	pthread_cond_destroy(&cv);
}

/*
 * A connection opened on fd from sa: track it, then make room: past the
 * per-address limit its address's longest-waiting connection is shut
 * down (the new one itself when no other waits: refused, as
 * libmicrohttpd's limit would), and near max_conns the longest-waiting
 * one of all.  Returns the connection (guard_close frees it), or NULL
 * when out of memory: the caller refuses the connection.
 */
struct guard_conn *
guard_open(int fd, const struct sockaddr *sa)
{
	struct guard_conn	*c, *v;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->fd = fd;
	pthread_mutex_lock(&mu);
	if ((c->a = addr_get(sa)) == NULL) {
		pthread_mutex_unlock(&mu);
		free(c);
		return NULL;
	}
	c->a->nconns++;
	c->a->live++;
	live++;
	tracked++;
	wait_link(c, 0);
	if (lim.per_ip > 0 && c->a->live > lim.per_ip)
		shut(c->a->first, R_PER_IP);
	if (live > room && (v = oldest()) != NULL && v != c)
		shut(v, R_ROOM);
	pthread_mutex_unlock(&mu);
	return c;
}

/*
 * c's request head is complete (libmicrohttpd's first call of the
 * request).  Returns 0, or -1 when c was shut down already: the request
 * must not go on.
 */
int
guard_head(struct guard_conn *c)
{
	int rc = 0;

	if (c == NULL)
		return 0;
	pthread_mutex_lock(&mu);
	if (c->state == G_SHUT)
		rc = -1;
	else {
		if (c->state == G_WAITING)
			wait_unlink(c);
		c->state = G_BUSY;
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

/* c's request is over and c stays open: it waits for its next head. */
void
guard_idle(struct guard_conn *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&mu);
	if (c->state == G_BUSY) {
		wait_link(c, 1);
		if (draining)
			shut(c, -1);
	}
	pthread_mutex_unlock(&mu);
}

/* libmicrohttpd closes c (its socket is still open): forget and free c. */
void
guard_close(struct guard_conn *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&mu);
	if (c->state == G_WAITING)
		wait_unlink(c);
	if (c->state != G_SHUT) {
		live--;
		c->a->live--;
	}
	c->a->nconns--;
	tracked--;
	addr_put(c->a);
	pthread_mutex_unlock(&mu);
	free(c);
}

/* Connections open, shut down ones included (until libmicrohttpd closes
 * them). */
int
guard_count(void)
{
	int	n;

	pthread_mutex_lock(&mu);
	n = tracked;
	pthread_mutex_unlock(&mu);
	return n;
}

/*
 * Stopping (no more connections are accepted): shut down every waiting
 * connection on which nothing arrived since it began to wait, at least
 * fresh_ms ago, and from now on each one whose request is over.  One with
 * a head on its way still has the stop's wait, and its deadline, to
 * finish.  fresh_ms spares a connection accepted (or answered) a moment
 * ago, whose request is likely on its way: the caller drains again once
 * that moment is over.
 */
void
guard_drain(int fresh_ms)
{
	struct guard_conn	*c, *next;
	struct list		*l[2] = { &heads, &kept };
	int64_t			 now = now_ms();
	int			 i;

	pthread_mutex_lock(&mu);
	draining = 1;
	for (i = 0; i < 2; i++)
		for (c = l[i]->first; c != NULL; c = next) {
			next = c->next;
			if (now - c->since_ms >= fresh_ms && quiet(c, now))
				shut(c, -1);
		}
	pthread_mutex_unlock(&mu);
}
