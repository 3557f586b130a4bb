/*
 * minutes.c - a ring of 60 per-minute counters of events acknowledged and
 * handled, for the console's chart.  In memory only: a restart starts an
 * empty hour.  Counting here costs a lock per group commit, not a query
 * over the events table (which holds days of rows) per page view.
 */
#include "minutes.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t	 mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t		 minute_of[MINUTES];	/* which minute a slot holds */
static long		 count[MINUTES_SERIES][MINUTES];

static int64_t
this_minute(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec / 60;
}

/* Count n events of series in the current minute. */
void
minutes_add(int series, long n)
{
	int64_t	m = this_minute();
	int	i = (int)(m % MINUTES), s;

	if (series < 0 || series >= MINUTES_SERIES || n <= 0)
		return;
	pthread_mutex_lock(&mu);
	if (minute_of[i] != m) {
		minute_of[i] = m;
		for (s = 0; s < MINUTES_SERIES; s++)
			count[s][i] = 0;
	}
	count[series][i] += n;
	pthread_mutex_unlock(&mu);
}

/*
 * The last hour, oldest minute first: out[series][0] is *first_minute
 * (Unix minutes), out[series][59] the current one.
 */
void
minutes_get(int64_t *first_minute, long out[MINUTES_SERIES][MINUTES])
{
	int64_t	m = this_minute(), want;
	int	k, i, s;

	*first_minute = m - (MINUTES - 1);
	pthread_mutex_lock(&mu);
	for (k = 0; k < MINUTES; k++) {
		want = *first_minute + k;
		i = (int)(want % MINUTES);
		for (s = 0; s < MINUTES_SERIES; s++)
			out[s][k] = minute_of[i] == want ? count[s][i] : 0;
	}
	pthread_mutex_unlock(&mu);
}
