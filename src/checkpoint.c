/*
 * checkpoint.c - WAL checkpoints mostly off the commit path.
 *
 * SQLite's automatic checkpoint runs inside the commit that crosses the
 * threshold: that commit copies the WAL into the database file and syncs
 * it while every delivery of its group waits for its 200 (about 1 commit
 * in 100 took 1 to 10 ms that way).  Here a thread of its own, at a lower
 * CPU priority, copies the bulk with PASSIVE checkpoints on its own
 * connection, which never take a lock the writer waits for.
 *
 * It cannot finish the job alone: the WAL starts over only when a write
 * transaction begins on a WAL that is copied to its end, and under load
 * the writer appends between any two of the thread's passes, so the WAL
 * would grow without end.  So once a pass is over, the writer, between
 * two commits, copies the few frames appended since (checkpoint_turn),
 * and its next transaction starts the WAL over.
 *
 * Every delivery that arrives meanwhile waits for that turn, so the
 * thread leaves it as little as it can: it passes again while its last
 * pass left more than CKPT_REST frames behind (a pass of 1,000 frames
 * takes 10 ms or more, in which the writer appends a few hundred), and
 * it syncs the database file itself.  SQLite syncs the database only in
 * the checkpoint that reaches the WAL's end, the writer's: it would sync
 * all the pages of the passes there.  The turn then copies and syncs
 * tens of pages instead of hundreds (the deliveries' p99: README, Design
 * notes).
 */
#include "checkpoint.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "metrics.h"

#define CKPT_PAGES	1000	/* SQLite's own default threshold */
#define CKPT_MAX_PAGES	20000	/* the writer does it all past this (80 MB) */
#define CKPT_IDLE_MS	1000	/* checkpoint what is left when quiet */
#define CKPT_NICE	5
#define CKPT_REST	100	/* frames the writer's turn may be left */
#define CKPT_PASSES	4	/* passes at most before it */

static pthread_t	 thread;
static pthread_mutex_t	 mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	 cv = PTHREAD_COND_INITIALIZER;
static int		 started, stopping, wanted, running;
static int		 copied;		/* a pass is over: the writer's turn */
static int		 wal_pages;		/* frames in the WAL, last commit */
static int		 sync_db;		/* durability is not off */
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
	if (pages >= CKPT_PAGES && !wanted && !running && !copied) {
		wanted = 1;
		pthread_cond_signal(&cv);
	}
	pthread_mutex_unlock(&mu);
	return SQLITE_OK;
}

/*
 * A PASSIVE checkpoint; *copied_to (unless NULL) gets the WAL frames now
 * in the file.
 */
static int
run_checkpoint(struct db *d, int *copied_to)
{
	struct timespec	t0, t1;
	int		log = 0, done = 0, rc;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = sqlite3_wal_checkpoint_v2(d->h, NULL, SQLITE_CHECKPOINT_PASSIVE,
	    &log, &done);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
		log_kv(LOG_WARN, "checkpoint failed", "error",
		    sqlite3_errmsg(d->h), NULL);
		return -1;
	}
	if (copied_to != NULL)
		*copied_to = done;
	metrics_observe("walua_checkpoint_duration_seconds",
	    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec -
	    t0.tv_nsec) / 1e9);
	return 0;
}

/*
 * The writer, between two commits: when a pass of the thread is over (or
 * the WAL is far too long), copy what is left, so that the next
 * transaction starts the WAL over.
 */
void
checkpoint_turn(struct db *writer)
{
	int	mine;

	if (!started)
		return;
	pthread_mutex_lock(&mu);
	mine = !running && (copied || wal_pages >= CKPT_MAX_PAGES);
	if (mine)
		copied = 0;
	pthread_mutex_unlock(&mu);
	if (mine)
		run_checkpoint(writer, NULL);
}

/*
 * The thread's part: passes until the writer's turn is short (above),
 * then the database file's sync.
 */
static void
passes(void)
{
	sqlite3_file	*f = NULL;
	int		 i, done, left;

	for (i = 0; i < CKPT_PASSES; i++) {
		if (run_checkpoint(cdb, &done) == -1)
			return;
		pthread_mutex_lock(&mu);
		left = wal_pages - done;
		pthread_mutex_unlock(&mu);
		if (left <= CKPT_REST)
			break;
	}
	if (sync_db && sqlite3_file_control(cdb->h, "main",
	    SQLITE_FCNTL_FILE_POINTER, &f) == SQLITE_OK && f != NULL &&
	    f->pMethods != NULL && f->pMethods->xSync(f, SQLITE_SYNC_NORMAL) !=
	    SQLITE_OK)
		log_kv(LOG_WARN, "checkpoint: cannot sync the database", NULL);
}

static void *
checkpoint_main(void *arg)
{
	struct timespec	ts;

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
			/* quiet: copy what a burst left */
			if (pthread_cond_timedwait(&cv, &mu, &ts) == ETIMEDOUT &&
			    wal_pages > 0 && !copied)
				wanted = 1;
		}
		if (stopping || !wanted)
			continue;
		wanted = 0;
		running = 1;
		pthread_mutex_unlock(&mu);
		passes();
		pthread_mutex_lock(&mu);
		running = 0;
		copied = 1;
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
	/* a checkpoint copies WAL frames to the file: it caches no pages */
	(void)db_exec(cdb, "PRAGMA cache_size = -64");
	/* replaces SQLite's automatic checkpoint on the writer's connection */
	sqlite3_wal_hook(writer->h, on_commit, NULL);
	stopping = wanted = running = copied = wal_pages = 0;
	sync_db = durability != DURABILITY_OFF;
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
	run_checkpoint(cdb, NULL);
	db_close(cdb);
	cdb = NULL;
}
