/*
 * metrics.c - the /metrics families (README, HTTP answers), kept in the
 * supervisor's process and rendered in Prometheus text format.
 *
 * A series is a family name plus its preformatted labels
 * (`endpoint="/x",code="200"`); callers only pass label values walua
 * controls (config paths, codes, kinds), never request data, so the
 * number of series stays small: a list under one mutex, in first-use
 * order (the order they render in), with a hash of its names beside it,
 * since several series are counted for every event.  Gauges that describe live state are refreshed by a callback
 * just before rendering.
 */
#include "metrics.h"

#include <pthread.h>
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

struct series {
	const struct family	*f;
	char			*labels;
	double			 value;
	double			*counts;	/* histograms: NBUCKETS + 1 */
	double			 sum;
	unsigned int		 hash;
	struct series		*next;		/* in first-use order */
	struct series		*hnext;		/* in its hash bucket */
};

#define NHASH	64

static pthread_mutex_t	 mu = PTHREAD_MUTEX_INITIALIZER;
static struct series	*all, *hashed[NHASH];
static void		(*refresh)(void);

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

/* The series, created if new; NULL for an unknown family or no memory. */
static struct series *
lookup(const char *name, const char *labels)
{
	struct series	*s, **pp;
	unsigned int	 h;

	if (labels == NULL)
		labels = "";
	h = hash(name, labels);
	for (s = hashed[h % NHASH]; s != NULL; s = s->hnext)
		if (s->hash == h && strcmp(s->f->name, name) == 0 &&
		    strcmp(s->labels, labels) == 0)
			return s;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	if ((s->f = family(name)) == NULL ||
	    (s->labels = strdup(labels)) == NULL) {
		free(s);
		return NULL;
	}
	s->hash = h;
	s->hnext = hashed[h % NHASH];
	hashed[h % NHASH] = s;
	for (pp = &all; *pp != NULL; pp = &(*pp)->next)
		;
	*pp = s;		/* append: families render in first-use order */
	return s;
}

void
metrics_inc(const char *name, const char *labels, double by)
{
	struct series *s;

	pthread_mutex_lock(&mu);
	if ((s = lookup(name, labels)) != NULL)
		s->value += by;
	pthread_mutex_unlock(&mu);
}

void
metrics_set(const char *name, const char *labels, double v)
{
	struct series *s;

	pthread_mutex_lock(&mu);
	if ((s = lookup(name, labels)) != NULL)
		s->value = v;
	pthread_mutex_unlock(&mu);
}

void
metrics_observe(const char *name, double v)
{
	struct series	*s;
	size_t		 i;

	pthread_mutex_lock(&mu);
	if ((s = lookup(name, NULL)) != NULL) {
		if (s->counts == NULL)
			s->counts = calloc(NBUCKETS + 1, sizeof(double));
		if (s->counts != NULL) {
			for (i = 0; i < NBUCKETS; i++)
				if (v <= buckets[i])
					s->counts[i]++;
			s->counts[NBUCKETS]++;
			s->sum += v;
		}
	}
	pthread_mutex_unlock(&mu);
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
render_series(struct buf *b, const struct series *s)
{
	size_t	i;

	if (s->counts == NULL) {
		if (*s->labels)
			buf_printf(b, "%s{%s} %.17g\n", s->f->name, s->labels,
			    s->value);
		else
			buf_printf(b, "%s %.17g\n", s->f->name, s->value);
		return;
	}
	for (i = 0; i < NBUCKETS; i++)
		buf_printf(b, "%s_bucket{le=\"%g\"} %.17g\n", s->f->name,
		    buckets[i], s->counts[i]);
	buf_printf(b, "%s_bucket{le=\"+Inf\"} %.17g\n", s->f->name,
	    s->counts[NBUCKETS]);
	buf_printf(b, "%s_sum %.17g\n%s_count %.17g\n", s->f->name, s->sum,
	    s->f->name, s->counts[NBUCKETS]);
}

/* Append the whole exposition to b.  Returns 0 or -1 (out of memory). */
int
metrics_render(struct buf *b)
{
	const struct family	*f;
	const struct series	*s;
	int			 seen;

	if (refresh != NULL)
		refresh();
	pthread_mutex_lock(&mu);
	for (f = families; f->name != NULL; f++) {
		seen = 0;
		for (s = all; s != NULL; s = s->next) {
			if (s->f != f)
				continue;
			if (!seen)
				buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n",
				    f->name, f->help, f->name, f->type);
			seen = 1;
			render_series(b, s);
		}
	}
	pthread_mutex_unlock(&mu);
	return b->data == NULL ? -1 : 0;
}

void
metrics_free(void)
{
	struct series *s, *next;

	pthread_mutex_lock(&mu);
	for (s = all; s != NULL; s = next) {
		next = s->next;
		free(s->labels);
		free(s->counts);
		free(s);
	}
	all = NULL;
	memset(hashed, 0, sizeof(hashed));
	pthread_mutex_unlock(&mu);
}
