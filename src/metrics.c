/*
 * metrics.c - the /metrics families (README, HTTP answers), kept in the
 * supervisor's process and rendered in Prometheus text format.
 *
 * A series is a family name plus its preformatted labels
 * (`endpoint="/x",code="200"`); callers only pass label values walua
 * controls (config paths, codes, kinds), never request data, so the
 * number of series stays small: a list in first-use order (the order
 * they render in), with a hash of its names beside it.  Several series
 * are counted for every event, on several threads: those threads keep
 * their series (metrics_series) and count with atomics, without a lookup
 * or a lock.  Gauges that describe live state are refreshed by a
 * callback just before rendering.
 */
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct family {
	const char	*name;
	const char	*type;
	const char	*help;
};

static const struct family families[] = {
	{ "walua_http_requests_total", "counter",
	    "HTTP requests answered, by endpoint and status code" },
	{ "walua_events_acked_total", "counter",
	    "Events acknowledged with a 200, by provider and kind" },
	{ "walua_events_duplicate_total", "counter",
	    "Events recognised as already received" },
	{ "walua_events_handled_total", "counter",
	    "Handler runs, by result (ok, error, timeout)" },
	{ "walua_events_retried_total", "counter",
	    "Failed handler runs scheduled for another attempt" },
	{ "walua_inbox_pending", "gauge",
	    "Events acknowledged and not yet handled" },
	{ "walua_inbox_inflight", "gauge",
	    "Events being handled now" },
	{ "walua_inbox_unmarked", "gauge",
	    "Events handled whose done mark is not committed yet (a crash "
	    "would run them again)" },
	{ "walua_inbox_oldest_pending_seconds", "gauge",
	    "Age of the oldest unhandled event" },
	{ "walua_dead_letters", "gauge",
	    "Events that failed every attempt" },
	{ "walua_handler_duration_seconds", "histogram",
	    "Time a handler took for one event" },
	{ "walua_reloads_total", "counter",
	    "Configuration reloads, by result" },
	{ "walua_generation", "gauge",
	    "The running generation of handler workers" },
	{ "walua_workers", "gauge",
	    "Live handler worker processes" },
	{ "walua_worker_restarts_total", "counter",
	    "Handler worker processes that died or were stopped" },
	{ "walua_commit_duration_seconds", "histogram",
	    "Time one inbox commit took (a group of requests and outcomes)" },
	{ "walua_checkpoint_duration_seconds", "histogram",
	    "Time one WAL checkpoint took (in its own thread, off the commit "
	    "path)" },
	{ "walua_pruned_rows_total", "counter",
	    "Expired rows deleted (dedup keys, finished events, status ranks, "
	    "store values past their TTL)" },
	{ "walua_handlers_inflight", "gauge",
	    "Events whose handlers are running now (waiting on the network "
	    "included)" },
	{ "walua_outbound_inflight", "gauge",
	    "Outbound requests of handlers in flight now" },
	{ "walua_outbound_duration_seconds", "histogram",
	    "Time one outbound request of a handler took" },
	{ "walua_outbound_throttled_total", "counter",
	    "Sends a provider throttled (429, 130429, 131056, 80007), by "
	    "provider and code" },
	{ "walua_sends_total", "counter",
	    "walua.whatsapp sends, by provider and result (ok, error, "
	    "journaled: made by an earlier run)" },
	{ "walua_outbound_requests_total", "counter",
	    "Requests to provider APIs and other services, by api and status "
	    "(code 0: no answer)" },
	{ "walua_provider_errors_total", "counter",
	    "Provider error codes received in events (130429: rate limit hit)" },
	{ "walua_oauth_tokens_issued_total", "counter",
	    "Access tokens issued by the OAuth2 token endpoint" },
	{ "walua_http_connections_closed_total", "counter",
	    "Connections closed by walua before a complete request head, by "
	    "reason (header_timeout, room, per_ip)" },
	{ "walua_auth_failures_total", "counter",
	    "Requests refused for authentication, by endpoint and reason" },
	{ NULL, NULL, NULL }
};

static const double buckets[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

/*
 * Counted without the mutex: values are atomics, and a series, once in
 * its hash chain, never changes or goes until metrics_free, so a lookup
 * walks the chains without it (only a new series takes it).  Histogram
 * buckets count the samples of their own range; the render adds them up.
 */
struct metric {
	const struct family	*f;
	char			*labels;
	_Atomic double		 value;
	_Atomic unsigned long long counts[NBUCKETS + 1];	/* histograms */
	_Atomic double		 sum;
	unsigned int		 hash;
	struct metric		*next;		/* in first-use order */
	struct metric * _Atomic	 hnext;		/* in its hash bucket */
};

#define NHASH	64

static pthread_mutex_t		 mu = PTHREAD_MUTEX_INITIALIZER;
static struct metric		*all;
static struct metric * _Atomic	 hashed[NHASH];
static void			(*refresh)(void);

static const struct family *
family(const char *name)
{
	const struct family *f;

	for (f = families; f->name != NULL; f++)
		if (strcmp(f->name, name) == 0)
			return f;
	return NULL;
}

/* FNV-1a of name, a NUL and labels. */
static unsigned int
hash(const char *name, const char *labels)
{
	unsigned int	h = 2166136261u;

	for (; *name != '\0'; name++)
		h = (h ^ (unsigned char)*name) * 16777619u;
	h *= 16777619u;
	for (; *labels != '\0'; labels++)
		h = (h ^ (unsigned char)*labels) * 16777619u;
	return h;
}

static struct metric *
find(unsigned int h, const char *name, const char *labels)
{
	struct metric	*m;

	for (m = atomic_load_explicit(&hashed[h % NHASH],
	    memory_order_acquire); m != NULL; m = atomic_load_explicit(
	    &m->hnext, memory_order_acquire))
		if (m->hash == h && strcmp(m->f->name, name) == 0 &&
		    strcmp(m->labels, labels) == 0)
			return m;
	return NULL;
}

/*
 * The series of family name with labels, created if new; NULL for an
 * unknown family or no memory.  Callers that count often keep it.
 */
struct metric *
metrics_series(const char *name, const char *labels)
{
	struct metric	*m, **pp;
	unsigned int	 h;

	if (labels == NULL)
		labels = "";
	h = hash(name, labels);
	if ((m = find(h, name, labels)) != NULL)
		return m;
	pthread_mutex_lock(&mu);
	if ((m = find(h, name, labels)) != NULL)	/* another was first */
		goto out;
	if ((m = calloc(1, sizeof(*m))) == NULL)
		goto out;
	if ((m->f = family(name)) == NULL ||
	    (m->labels = strdup(labels)) == NULL) {
		free(m);
		m = NULL;
		goto out;
	}
	m->hash = h;
	for (pp = &all; *pp != NULL; pp = &(*pp)->next)
		;
	*pp = m;		/* append: families render in first-use order */
	atomic_store_explicit(&m->hnext, atomic_load_explicit(
	    &hashed[h % NHASH], memory_order_relaxed), memory_order_relaxed);
	/* last: a lookup that sees it sees it whole */
	atomic_store_explicit(&hashed[h % NHASH], m, memory_order_release);
out:
	pthread_mutex_unlock(&mu);
	return m;
}

static void
add_double(_Atomic double *p, double by)
{
	double	old = atomic_load_explicit(p, memory_order_relaxed);

	while (!atomic_compare_exchange_weak_explicit(p, &old, old + by,
	    memory_order_relaxed, memory_order_relaxed))
		;
}

/* Add by to m (a counter, or a gauge); m NULL: nothing. */
void
metrics_add(struct metric *m, double by)
{
	if (m != NULL)
		add_double(&m->value, by);
}

/* A sample of histogram m, in seconds; m NULL: nothing. */
void
metrics_sample(struct metric *m, double v)
{
	size_t	i;

	if (m == NULL)
		return;
	for (i = 0; i < NBUCKETS && !(v <= buckets[i]); i++)
		;			/* NaN: +Inf's */
	atomic_fetch_add_explicit(&m->counts[i], 1, memory_order_relaxed);
	add_double(&m->sum, v);
}

void
metrics_inc(const char *name, const char *labels, double by)
{
	metrics_add(metrics_series(name, labels), by);
}

void
metrics_set(const char *name, const char *labels, double v)
{
	struct metric *m;

	if ((m = metrics_series(name, labels)) != NULL)
		atomic_store_explicit(&m->value, v, memory_order_relaxed);
}

void
metrics_observe(const char *name, double v)
{
	metrics_sample(metrics_series(name, NULL), v);
}

/* A sample from a worker: observed if name is a histogram, else added. */
void
metrics_record(const char *name, const char *labels, double v)
{
	const struct family *f = family(name);

	if (f == NULL)
		return;
	if (strcmp(f->type, "histogram") == 0)
		metrics_observe(name, v);
	else
		metrics_inc(name, labels, v);
}

void
metrics_on_render(void (*fn)(void))
{
	refresh = fn;
}

static void
render_series(struct buf *b, const struct metric *m)
{
	unsigned long long	n = 0;
	size_t			i;

	if (strcmp(m->f->type, "histogram") != 0) {
		if (*m->labels)
			buf_printf(b, "%s{%s} %.17g\n", m->f->name, m->labels,
			    atomic_load(&m->value));
		else
			buf_printf(b, "%s %.17g\n", m->f->name,
			    atomic_load(&m->value));
		return;
	}
	for (i = 0; i < NBUCKETS; i++) {
		n += atomic_load(&m->counts[i]);
		buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", m->f->name,
		    buckets[i], n);
	}
	n += atomic_load(&m->counts[NBUCKETS]);
	buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", m->f->name, n);
	buf_printf(b, "%s_sum %.17g\n%s_count %llu\n", m->f->name,
	    atomic_load(&m->sum), m->f->name, n);
}

/* Append the whole exposition to b.  Returns 0 or -1 (out of memory). */
int
metrics_render(struct buf *b)
{
	const struct family	*f;
	const struct metric	*m;
	int			 seen;

	if (refresh != NULL)
		refresh();
	pthread_mutex_lock(&mu);
	for (f = families; f->name != NULL; f++) {
		seen = 0;
		for (m = all; m != NULL; m = m->next) {
			if (m->f != f)
				continue;
			if (!seen)
				buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n",
				    f->name, f->help, f->name, f->type);
			seen = 1;
			render_series(b, m);
		}
	}
	pthread_mutex_unlock(&mu);
	return b->data == NULL ? -1 : 0;
}

void
metrics_free(void)
{
	struct metric	*m, *next;
	size_t		 i;

	pthread_mutex_lock(&mu);
	for (m = all; m != NULL; m = next) {
		next = m->next;
		free(m->labels);
		free(m);
	}
	all = NULL;
	for (i = 0; i < NHASH; i++)
		atomic_store(&hashed[i], NULL);
	pthread_mutex_unlock(&mu);
}
