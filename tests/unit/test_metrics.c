/*
 * test_metrics.c - the /metrics series: kept series and lookups are one,
 * counts from several threads at once all arrive, histograms render
 * cumulative buckets, and the text is Prometheus's.
 */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "unit.h"

#define THREADS	4
#define ROUNDS	100000

/*
 * The lines of the exposition that start with prefix and a space: how
 * many, and the value of the first in *v (-1: none).
 */
static int
scan(const char *prefix, double *v)
{
	struct buf	 b = { 0 };
	const char	*p;
	int		 found = 0;
	size_t		 n = strlen(prefix);

	*v = -1;
	if (metrics_render(&b) == -1)
		return -1;
	buf_append(&b, "", 1);
	for (p = b.data; p != NULL && *p != '\0'; p = strchr(p, '\n'),
	    p = p ? p + 1 : NULL)
		if (strncmp(p, prefix, n) == 0 && p[n] == ' ' && found++ == 0)
			*v = strtod(p + n + 1, NULL);
	buf_free(&b);
	return found;
}

static double
value_of(const char *prefix)
{
	double	v;

	scan(prefix, &v);
	return v;
}

static int
lines_of(const char *prefix)
{
	double	v;

	return scan(prefix, &v);
}

/* Each thread: a kept series, lookups by name, and a new series each. */
static void *
count(void *arg)
{
	struct metric	*kept = metrics_series("walua_events_acked_total",
			    "provider=\"insider\",kind=\"message\"");
	char		 labels[64];
	int		 i;

	snprintf(labels, sizeof(labels), "endpoint=\"/t%d\",code=\"200\"",
	    (int)(long)arg % 2);
	for (i = 0; i < ROUNDS; i++) {
		metrics_add(kept, 1);
		metrics_inc("walua_http_requests_total", labels, 1);
		metrics_sample(metrics_series("walua_commit_duration_seconds",
		    NULL), 0.002);
	}
	return NULL;
}

int
main(void)
{
	pthread_t	 t[THREADS];
	struct metric	*a, *b;
	long		 i;

	/* one series per family and labels, the same pointer each time */
	a = metrics_series("walua_events_handled_total", "result=\"ok\"");
	b = metrics_series("walua_events_handled_total", "result=\"ok\"");
	CHECK(a != NULL && a == b);
	b = metrics_series("walua_events_handled_total", "result=\"error\"");
	CHECK(b != NULL && b != a);
	CHECK(metrics_series("walua_no_such_family", NULL) == NULL);
	metrics_add(NULL, 1);		/* an unknown family's: nothing */
	metrics_sample(NULL, 1);

	metrics_add(a, 2);
	metrics_inc("walua_events_handled_total", "result=\"ok\"", 3);
	CHECK(value_of("walua_events_handled_total{result=\"ok\"}") == 5);
	CHECK(value_of("walua_events_handled_total{result=\"error\"}") == 0);
	metrics_set("walua_inbox_pending", NULL, 7.5);
	metrics_set("walua_inbox_pending", NULL, 2.25);
	CHECK(value_of("walua_inbox_pending") == 2.25);

	/* histograms: cumulative buckets, +Inf and _count all samples */
	metrics_observe("walua_handler_duration_seconds", 0.0005);
	metrics_observe("walua_handler_duration_seconds", 0.001);
	metrics_observe("walua_handler_duration_seconds", 0.003);
	metrics_observe("walua_handler_duration_seconds", 20);
	metrics_observe("walua_handler_duration_seconds", NAN);
	CHECK(value_of("walua_handler_duration_seconds_bucket{le=\"0.001\"}")
	    == 2);
	CHECK(value_of("walua_handler_duration_seconds_bucket{le=\"0.0025\"}")
	    == 2);
	CHECK(value_of("walua_handler_duration_seconds_bucket{le=\"0.005\"}")
	    == 3);
	CHECK(value_of("walua_handler_duration_seconds_bucket{le=\"10\"}")
	    == 3);
	CHECK(value_of("walua_handler_duration_seconds_bucket{le=\"+Inf\"}")
	    == 5);
	CHECK(value_of("walua_handler_duration_seconds_count") == 5);
	CHECK(lines_of("walua_handler_duration_seconds_sum") == 1);

	/* several threads at once: every count arrives, no series twice */
	for (i = 0; i < THREADS; i++)
		CHECK(pthread_create(&t[i], NULL, count, (void *)i) == 0);
	for (i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	CHECK(value_of("walua_events_acked_total{provider=\"insider\","
	    "kind=\"message\"}") == THREADS * ROUNDS);
	CHECK(value_of("walua_http_requests_total{endpoint=\"/t0\","
	    "code=\"200\"}") == THREADS / 2 * ROUNDS);
	CHECK(value_of("walua_http_requests_total{endpoint=\"/t1\","
	    "code=\"200\"}") == THREADS / 2 * ROUNDS);
	CHECK(lines_of("walua_http_requests_total{endpoint=\"/t0\","
	    "code=\"200\"}") == 1);
	CHECK(value_of("walua_commit_duration_seconds_bucket{le=\"0.001\"}")
	    == 0);
	CHECK(value_of("walua_commit_duration_seconds_bucket{le=\"0.0025\"}")
	    == THREADS * ROUNDS);
	CHECK(fabs(value_of("walua_commit_duration_seconds_sum") -
	    0.002 * THREADS * ROUNDS) < 1e-6);
	CHECK(lines_of("# TYPE walua_commit_duration_seconds") == 1);

	metrics_free();
	return UNIT_DONE();
}
