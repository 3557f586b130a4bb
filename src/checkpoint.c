/*
 * checkpoint.c - WAL checkpoints off the commit path.
 *
 * SQLite's automatic checkpoint runs inside the commit that crosses the
 * threshold: that commit copies the WAL into the database file and syncs
 * it while every delivery of its group waits for its 200 (about 1 commit
 * in 100 took 1 to 10 ms that way).  Here the inbox writer's connection
 * only notes the WAL's size after each commit, and a thread of its own,
 * at a lower CPU priority, runs PASSIVE checkpoints with its own
 * connection: they never take a lock a writer waits for, and the writer
 * starts the WAL over after one has copied everything.
 */
#include "checkpoint.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "metrics.h"

#define CKPT_PAGES	1000	/* SQLite's own default threshold */
#define CKPT_IDLE_MS	1000	/* checkpoint what is left when quiet */
#define CKPT_NICE	5

static pthread_t	 thread;
static pthread_mutex_t	 mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	 cv = PTHREAD_COND_INITIALIZER;
static int		 started, stopping, wanted;
static int		 wal_pages;		/* after the last commit */
static struct db	*cdb;

/* sqlite3_wal_hook: after each commit of the writer's connection. */
static int
on_commit(void *arg, sqlite3 *h, const char *name, int pages)
{
	(void)arg;
	(void)h;
	(void)name;
	pthread_mutex_lock(&mu);
	wal_pages = pages;
	if (pages >= CKPT_PAGES && !wanted) {
		wanted = 1;
		pthread_cond_signal(&cv);
	}
	pthread_mutex_unlock(&mu);
	return SQLITE_OK;
}

static void
run_checkpoint(void)
{
	struct timespec	t0, t1;
	int		log = 0, done = 0, rc;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = sqlite3_wal_checkpoint_v2(cdb->h, NULL, SQLITE_CHECKPOINT_PASSIVE,
	    &log, &done);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
		log_kv(LOG_WARN, "checkpoint failed", "error",
		    sqlite3_errmsg(cdb->h), NULL);
		return;
	}
	metrics_observe("walua_checkpoint_duration_seconds",
	    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec -
	    t0.tv_nsec) / 1e9);
}

static void *
checkpoint_main(void *arg)
{
	struct timespec	ts;
	int		run;

	(void)arg;
	pthread_setname_np(pthread_self(), "checkpointer");	/* top -H */
	/* copying pages may wait: the request path may not */
	if (setpriority(PRIO_PROCESS, (id_t)gettid(), CKPT_NICE) == -1)
		log_kv(LOG_DEBUG, "checkpointer: setpriority failed", "error",
		    strerror(errno), NULL);
	pthread_mutex_lock(&mu);
	while (!stopping) {
		if (!wanted) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += CKPT_IDLE_MS * 1000000L;
			ts.tv_sec += ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			if (pthread_cond_timedwait(&cv, &mu, &ts) == ETIMEDOUT) {
				/* quiet: checkpoint what a burst left */
				if (wal_pages > 0)
					wanted = 1;
			}
		}
		if (stopping)
			break;
		run = wanted;
		wanted = 0;
		wal_pages = 0;
		pthread_mutex_unlock(&mu);
		if (run)
			run_checkpoint();
		pthread_mutex_lock(&mu);
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

int
checkpoint_start(struct db *writer, const char *path, int durability,
    char *err, size_t errlen)
{
	if ((cdb = db_open(path, durability, err, errlen)) == NULL)
		return -1;
	/* replaces SQLite's automatic checkpoint on the writer's connection */
	sqlite3_wal_hook(writer->h, on_commit, NULL);
	stopping = wanted = wal_pages = 0;
	if ((errno = pthread_create(&thread, NULL, checkpoint_main, NULL)) !=
	    0) {
		snprintf(err, errlen, "inbox: cannot start the checkpointer: %s",
		    strerror(errno));
		sqlite3_wal_autocheckpoint(writer->h, CKPT_PAGES);
		db_close(cdb);
		cdb = NULL;
		return -1;
	}
	started = 1;
	return 0;
}

/* Stop the thread (the writer has stopped); a last checkpoint. */
void
checkpoint_stop(void)
{
	if (!started)
		return;
	pthread_mutex_lock(&mu);
	stopping = 1;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
	pthread_join(thread, NULL);
	started = 0;
	run_checkpoint();
	db_close(cdb);
	cdb = NULL;
}
