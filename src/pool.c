/*
 * pool.c - the supervisor: handler worker processes, their generations,
 * reload, retries, and the graceful stop.  Runs on the main thread only.
 *
 * A generation is one loaded configuration plus its worker processes,
 * each a `walua __worker` holding one sandboxed Lua state.  The loop polls
 * a self-pipe (signals), the queue's eventfd (new events) and the workers'
 * sockets; it hands each idle worker of the current generation the next
 * ready event and acts on each outcome.  Nothing here runs user Lua, so a
 * handler that hangs even inside C (where no hook fires) is simply killed
 * once past its budget, its event failing like any error.
 *
 * SIGHUP builds a new generation beside the running one: the config is
 * re-read and checked, its workers spawned and every handler script
 * loaded; only when all report ready does it become current.  Events
 * already handed to the old workers finish there; the old workers are then
 * closed.  A generation that fails to load is discarded, its errors
 * logged, and the running one stays (Redis build-then-swap; OpenBSD's
 * "reload already in progress" becomes a pending reload).
 */
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "db.h"
#include "inbox.h"
#include "ipc.h"
#include "kv.h"
#include "log.h"
#include "luasrc.h"
#include "metrics.h"
#include "pace.h"
#include "queue.h"
#include "httpd.h"
#include "sdnotify.h"
#include "upgrade.h"
#include "worker.h"

extern char **environ;

enum { W_LOADING, W_READY, W_CLOSED };

#define MARKS_AHEAD	8	/* events handled, mark not committed, per worker */
#define STALL_MS	50	/* one event's Lua running this long: busy */
#define SLICE_GUESS_US	500	/* a new worker's usual slice of Lua */

/*
 * An event in flight on a worker, in the worker's slot of that number;
 * the slots in use are also on a list in dispatch order, so the oldest
 * (the first to pass its budget) is at its head.
 */
struct slot {
	struct qitem	*it;		/* NULL: free */
	int64_t		 kill_ms;	/* past 1.5x its budget */
	int		 prev, next;	/* in use: dispatch order; free: next */
};

struct gen {
	int		 id;
	struct config	*cfg;		/* one reference, this generation's */
	struct buf	 load;		/* the LOAD frame's payload */
	int		 target;	/* workers it should have */
	int		 nready;
	int		 nlive;		/* workers not yet reaped */
	int		 failed;
	struct buf	 errors;
	int64_t		 respawn_ms;	/* not before: crash-loop brake */
};

struct worker {
	pid_t		 pid;
	int		 fd;		/* -1 once closed */
	int		 state;
	int		 killed;	/* we sent SIGKILL (budget exceeded) */
	int		 culprit;	/* the slot it was killed for, or -1 */
	int		 retiring;	/* takes no more events (a full state) */
	struct gen	*gen;
	struct slot	*slots;		/* limits.handler_concurrency */
	int		 nslots, inflight;
	int		 free_slot;	/* first free, or -1 */
	int		 oldest, newest;	/* in use, or -1 */
	int64_t		 load_started_ms, load_kill_ms;
	struct worker_shm *shm;		/* shared with the process */
	struct buf	 out;		/* frames not yet written to it */
	int		 blocked;	/* its socket is full */
	struct ipc_reader rd;
	struct worker	*next;
};

static struct worker	*workers;
static struct gen	*current, *loading;
static int		 gen_seq;	/* generations that became current */
static int		 reload_pending, stopping;
static int64_t		 stop_deadline;
static int		 sigpipe[2] = { -1, -1 };
static int		 pace_fd = -1;	/* the workers' shared pace (pace.c) */
static const char	*config_file;	/* NULL: the built-in demo */
static void		(*stop_http)(void);
static atomic_int	 pub_generation, pub_workers;	/* for /healthz */
/*
 * The workers' shared pages, for /metrics: rendered by an HTTP thread at
 * any time, so a copy of the list under a lock of its own.
 */
#define PAGES_MAX	256
static pthread_mutex_t	 pages_mu = PTHREAD_MUTEX_INITIALIZER;
static struct worker_shm *pages[PAGES_MAX];

static void
on_signal(int sig)
{
	unsigned char	c = (unsigned char)sig;
	int		saved = errno;

	(void)!write(sigpipe[1], &c, 1);
	errno = saved;
}

static void
put_u32(struct buf *b, size_t v)
{
	unsigned char u[4] = { (unsigned char)(v >> 24),
	    (unsigned char)(v >> 16), (unsigned char)(v >> 8),
	    (unsigned char)v };

	buf_append(b, u, 4);
}

static void
gen_free(struct gen *g)
{
	if (g == NULL)
		return;
	config_put(g->cfg);
	buf_free(&g->load);
	buf_free(&g->errors);
	free(g);
}

/* Free g if nothing refers to it any more. */
static void
gen_maybe_free(struct gen *g)
{
	if (g != NULL && g != current && g != loading && g->nlive == 0)
		gen_free(g);
}

/* The last reload's outcome, for the console (read on HTTP threads). */
static pthread_mutex_t	 reload_mu = PTHREAD_MUTEX_INITIALIZER;
static struct reload_info last_reload;

static void
note_reload(int ok, const char *error)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	pthread_mutex_lock(&reload_mu);
	last_reload.ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	last_reload.ok = ok;
	snprintf(last_reload.error, sizeof(last_reload.error), "%s",
	    error != NULL ? error : "");
	pthread_mutex_unlock(&reload_mu);
}

void
pool_last_reload(struct reload_info *out)
{
	pthread_mutex_lock(&reload_mu);
	*out = last_reload;
	pthread_mutex_unlock(&reload_mu);
}

/* A generation for cfg (taking the caller's reference), LOAD frame built. */
static struct gen *
gen_new(struct config *cfg, char *err, size_t errlen)
{
	struct gen	*g;
	struct buf	 src = { 0 };
	int		 i;

	if ((g = calloc(1, sizeof(*g))) == NULL) {
		snprintf(err, errlen, "out of memory");
		config_put(cfg);
		return NULL;
	}
	g->cfg = cfg;
	g->target = cfg->workers;
	put_u32(&g->load, cfg->jsonlen);
	buf_append(&g->load, cfg->json, cfg->jsonlen);
	for (i = 0; i < cfg->nhandlers; i++) {
		if (luasrc_read(cfg->handlers[i], &src, err, errlen) == -1) {
			buf_free(&src);
			gen_free(g);
			return NULL;
		}
		put_u32(&g->load, strlen(cfg->handlers[i]));
		buf_puts(&g->load, cfg->handlers[i]);
		put_u32(&g->load, src.len);
		buf_append(&g->load, src.data, src.len);
	}
	buf_free(&src);
	if (g->load.data == NULL) {
		snprintf(err, errlen, "out of memory");
		gen_free(g);
		return NULL;
	}
	return g;
}

/*
 * How long a worker may take to load every script: each script's top
 * level has the handler budget (the hook stops Lua there), 1.5 times that
 * covers what no hook stops (C code, as for a handler), plus time to
 * start the process.  A worker past it is killed and its generation
 * fails, so a script stuck at load, or a LOAD frame that never arrived,
 * cannot hold `serve` or later reloads forever.
 */
static int64_t
load_deadline_ms(const struct config *cfg)
{
	int64_t t = cfg->limits.handler_timeout_ms;

	return (int64_t)(cfg->nhandlers > 0 ? cfg->nhandlers : 1) *
	    (t + t / 2) + 2000;
}

/* Outbound transfers in flight in every worker, read from their pages. */
static int
outbound(void)
{
	int	i, n = 0;

	pthread_mutex_lock(&pages_mu);
	for (i = 0; i < PAGES_MAX; i++)
		if (pages[i] != NULL)
			n += atomic_load(&pages[i]->outbound);
	pthread_mutex_unlock(&pages_mu);
	return n;
}

static void
page_list(struct worker_shm *p, struct worker_shm *replace)
{
	int	i;

	pthread_mutex_lock(&pages_mu);
	for (i = 0; i < PAGES_MAX; i++)
		if (pages[i] == replace) {
			pages[i] = p;
			break;
		}
	pthread_mutex_unlock(&pages_mu);
}

/* fd, or a close-on-exec copy of it above min (fd is closed then). */
static int
fd_above(int fd, int min)
{
	int n;

	if (fd > min || (n = fcntl(fd, F_DUPFD_CLOEXEC, min + 1)) == -1)
		return fd;
	close(fd);
	return n;
}

/* Start one worker process for g and send it the LOAD frame. */
/*
 * A worker's environment: walua's, and GNUTLS_NO_IMPLICIT_INIT=1.  GnuTLS
 * comes with libcurl (for protocols walua does not let it use) and would
 * set itself up as it loads, 0.8 MiB of RSS per worker; curl speaks TLS
 * with OpenSSL.  (libmicrohttpd, which sets GnuTLS up too, is loaded by
 * the supervisor only: src/mhd.h.)  Built once.
 */
static char **
worker_env(void)
{
	static char	 var[] = "GNUTLS_NO_IMPLICIT_INIT=1";
	static char	**env;
	size_t		 n;

	if (env != NULL)
		return env;
	for (n = 0; environ[n] != NULL; n++)
		;
	if ((env = calloc(n + 2, sizeof(*env))) == NULL)
		return environ;
	memcpy(env, environ, n * sizeof(*env));
	env[n] = var;
	return env;
}

static struct worker *
spawn(struct gen *g)
{
	struct worker			*w;
	posix_spawn_file_actions_t	 fa;
	posix_spawnattr_t		 at;
	sigset_t			 none, dfl;
	static char			 a0[] = "walua", a1[] = "__worker";
	char				*argv[] = { a0, a1, NULL };
	int				 sv[2], mfd, rc;
	struct timeval			 tv = { 5, 0 };
	void				*page;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
		log_msg(LOG_ERROR, "spawn: socketpair: %s", strerror(errno));
		free(w);
		return NULL;
	}
	if ((mfd = memfd_create("walua-worker", MFD_CLOEXEC)) == -1 ||
	    ftruncate(mfd, sizeof(struct worker_shm)) == -1 ||
	    (page = mmap(NULL, sizeof(struct worker_shm), PROT_READ |
	    PROT_WRITE, MAP_SHARED, mfd, 0)) == MAP_FAILED) {
		log_msg(LOG_ERROR, "spawn: shared page: %s", strerror(errno));
		if (mfd != -1)
			close(mfd);
		close(sv[0]);
		close(sv[1]);
		free(w);
		return NULL;
	}
	w->shm = page;
	/* until its first slice says: events spread, none piles up here */
	atomic_store(&w->shm->slice_us, SLICE_GUESS_US);
	page_list(w->shm, NULL);
	/* above the fds the child gets: dup2 onto the same fd would keep
	 * close-on-exec, and one action must not overwrite the other's */
	sv[1] = fd_above(sv[1], WORKER_PACE_FD);
	mfd = fd_above(mfd, WORKER_PACE_FD);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, sv[1], WORKER_FD);
	posix_spawn_file_actions_adddup2(&fa, mfd, WORKER_SHM_FD);
	if (pace_fd != -1)
		posix_spawn_file_actions_adddup2(&fa, pace_fd, WORKER_PACE_FD);
	posix_spawnattr_init(&at);
	sigemptyset(&none);
	sigfillset(&dfl);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &dfl);
	/* own process group: a terminal's ^C reaches only the supervisor */
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
	    POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
	rc = posix_spawn(&w->pid, "/proc/self/exe", &fa, &at, argv,
	    worker_env());
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(sv[1]);
	close(mfd);
	if (rc != 0) {
		log_msg(LOG_ERROR, "spawn: cannot start a worker: %s",
		    strerror(rc));
		close(sv[0]);
		page_list(NULL, w->shm);
		munmap(w->shm, sizeof(struct worker_shm));
		free(w);
		return NULL;
	}
	w->fd = sv[0];
	setsockopt(w->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	w->gen = g;
	w->state = W_LOADING;
	w->culprit = w->oldest = w->newest = w->free_slot = -1;
	w->load_started_ms = queue_now_ms();
	w->load_kill_ms = w->load_started_ms + load_deadline_ms(g->cfg);
	g->nlive++;
	w->next = workers;
	workers = w;
	metrics_inc("walua_workers", NULL, 1);
	atomic_fetch_add(&pub_workers, 1);
	if (ipc_send(w->fd, IPC_LOAD, g->load.data, g->load.len, NULL, 0) == -1)
		log_msg(LOG_WARN, "spawn: cannot send the scripts to worker "
		    "%d: %s", (int)w->pid, strerror(errno));
	return w;
}

static void
close_worker(struct worker *w)
{
	if (w->fd != -1) {
		close(w->fd);
		w->fd = -1;
	}
	ipc_reader_free(&w->rd);
	buf_free(&w->out);
	w->state = W_CLOSED;
}

/* Slots: what a worker runs.  The caller has checked there is room. */
static int
slot_take(struct worker *w, struct qitem *it, int64_t kill_ms)
{
	int		 i = w->free_slot;
	struct slot	*s = &w->slots[i];

	w->free_slot = s->next;
	s->it = it;
	s->kill_ms = kill_ms;
	s->prev = w->newest;
	s->next = -1;
	if (w->newest != -1)
		w->slots[w->newest].next = i;
	else
		w->oldest = i;
	w->newest = i;
	w->inflight++;
	return i;
}

/* Free slot i; returns the event that was in it. */
static struct qitem *
slot_give(struct worker *w, int i)
{
	struct slot	*s = &w->slots[i];
	struct qitem	*it = s->it;

	if (s->prev != -1)
		w->slots[s->prev].next = s->next;
	else
		w->oldest = s->next;
	if (s->next != -1)
		w->slots[s->next].prev = s->prev;
	else
		w->newest = s->prev;
	s->it = NULL;
	s->next = w->free_slot;
	w->free_slot = i;
	w->inflight--;
	return it;
}

/* Slots for a worker that has loaded (limits.handler_concurrency). */
static int
slots_init(struct worker *w)
{
	int i, n = w->gen->cfg->limits.handler_concurrency;

	if ((w->slots = calloc((size_t)n, sizeof(*w->slots))) == NULL)
		return -1;
	w->nslots = n;
	for (i = 0; i < n; i++)
		w->slots[i].next = i + 1 < n ? i + 1 : -1;
	w->free_slot = 0;
	return 0;
}

static void
worker_free(struct worker *w)
{
	free(w->slots);
	if (w->shm != NULL) {
		page_list(NULL, w->shm);
		munmap(w->shm, sizeof(struct worker_shm));
	}
	buf_free(&w->out);
	free(w);
}

static void
log_event(int level, const char *msg, const struct qitem *it,
    const char *k1, const char *v1, const char *k2, const char *v2)
{
	char	attempt[16];

	snprintf(attempt, sizeof(attempt), "%d", it->attempts);
	log_kv(level, msg, "event", it->id, "conversation", it->conv,
	    "kind", it->kind, "message_id", it->message_id, "#attempt",
	    attempt, k1 ? k1 : "", v1, k2 ? k2 : "", v2, NULL);
}

/* The event's handler run failed: retry it later, or dead-letter it. */
static void
fail_item(struct qitem *it, const char *result, const char *msg)
{
	const struct config	*cfg = current ? current->cfg : NULL;
	int			 retries = cfg ? cfg->limits.retries : 0;
	char			 labels[64];

	snprintf(labels, sizeof(labels), "result=\"%s\"", result);
	metrics_inc("walua_events_handled_total", labels, 1);
	free(it->last_error);
	it->last_error = strdup(msg);
	if (it->attempts <= retries) {
		int delay = cfg ? config_backoff_ms(cfg, it->attempts) : 1000;
		char d[16];

		snprintf(d, sizeof(d), "%d", delay);
		log_event(LOG_WARN, "handler failed", it, "error", msg,
		    "#retry_in_ms", d);
		metrics_inc("walua_events_retried_total", NULL, 1);
		inbox_retry(it, db_now_ms() + delay);
		queue_retry(it, queue_now_ms() + delay);
	} else {
		log_event(LOG_ERROR, "event dead-lettered", it, "error", msg,
		    NULL, NULL);
		inbox_dead(it);
		queue_dead(it);
	}
}

/*
 * The events in flight on a worker that is gone.  The one it was stopped
 * for (its budget), or whose Lua was running when it died, fails like
 * any error; the others did nothing wrong: back to the queue, at the head
 * of their conversations, without an attempt counted.  A death no event
 * can be blamed for fails them all (their retries will tell).
 */
static void
lost_events(struct worker *w)
{
	int		 i, culprit = w->culprit, n = 0;
	struct qitem	*it;
	char		 count[16];

	if (!w->killed) {
		culprit = w->shm != NULL ? atomic_load(&w->shm->running) - 1 :
		    -1;
		if (culprit >= w->nslots || (culprit >= 0 &&
		    w->slots[culprit].it == NULL))
			culprit = -1;
	}
	if (culprit >= 0) {
		it = slot_give(w, culprit);
		fail_item(it, w->killed ? "timeout" : "error", w->killed ?
		    "handler stopped: it ran past its time budget" :
		    "handler worker died");
	}
	while ((i = w->oldest) != -1) {
		it = slot_give(w, i);
		if (culprit < 0) {
			fail_item(it, "error", "handler worker died");
			continue;
		}
		log_event(LOG_DEBUG, "event re-queued: its worker stopped", it,
		    NULL, NULL, NULL, NULL);
		queue_giveback(it);
		n++;
	}
	if (n > 0) {
		snprintf(count, sizeof(count), "%d", n);
		log_kv(LOG_WARN, "events in flight on a stopped worker go back "
		    "to the queue (no attempt counted)", "#events", count,
		    NULL);
	}
}

/* A worker is gone (EOF or error on its socket). */
static void
worker_lost(struct worker *w)
{
	struct gen	*g = w->gen;

	if (w->state == W_LOADING && g == loading) {
		g->failed = 1;
		if (g->errors.len == 0)
			buf_printf(&g->errors, "worker %d exited while loading",
			    (int)w->pid);
	}
	if (w->inflight > 0)
		lost_events(w);
	if (w->state != W_CLOSED && !stopping && w->state != W_LOADING) {
		metrics_inc("walua_worker_restarts_total", NULL, 1);
		if (!w->killed)
			log_msg(LOG_WARN, "worker %d exited unexpectedly",
			    (int)w->pid);
	}
	close_worker(w);
}

static int
same_log_file(const struct config *a, const struct config *b)
{
	if (a->log_file == NULL || b->log_file == NULL)
		return a->log_file == b->log_file;
	return strcmp(a->log_file, b->log_file) == 0;
}

static void
reopen_log(const struct config *cfg)
{
	if (cfg->log_file != NULL && log_open(cfg->log_file) == -1)
		log_msg(LOG_WARN, "cannot open log file '%s': %s",
		    cfg->log_file, strerror(errno));
}

/*
 * SIGUSR1 (after logrotate moved log_file): the supervisor points its fd
 * 2 at a new file at the configured path, and tells each worker to do
 * the same (they inherited fd 2; see worker.c).
 */
static void
reopen_logs(void)
{
	struct worker	*w;

	if (current == NULL || current->cfg->log_file == NULL)
		return;
	reopen_log(current->cfg);
	for (w = workers; w != NULL; w = w->next)
		if (w->state != W_CLOSED)
			kill(w->pid, SIGUSR1);
	log_kv(LOG_INFO, "log file reopened", "log_file",
	    current->cfg->log_file, NULL);
}

/*
 * Make the loading generation current; retire the old one.  Only now does
 * it get its number: a reload that fails uses none.
 */
static void
activate(struct gen *g)
{
	struct gen	*old = current;
	struct worker	*w;
	char		 id[16];

	g->id = ++gen_seq;
	if (old != NULL && !same_log_file(g->cfg, old->cfg)) {
		if (g->cfg->log_file == NULL)
			log_kv(LOG_WARN, "setting changed: restart walua to "
			    "apply it", "key", "log_file", NULL);
		else
			reopen_log(g->cfg);
	}
	current = g;
	loading = NULL;
	g->cfg->refs++;		/* config_get's count: one more user */
	config_set_current(g->cfg);
	log_set_level(g->cfg->log_level);
	metrics_set("walua_generation", NULL, g->id);
	atomic_store(&pub_generation, g->id);
	/* the old generation's workers go once their events are over */
	for (w = workers; w != NULL; w = w->next)
		if (w->gen == old && w->state == W_READY && w->inflight == 0)
			close_worker(w);
	snprintf(id, sizeof(id), "%d", g->id);
	log_kv(LOG_INFO, old ? "reload ok" : "handlers loaded",
	    "#generation", id, NULL);
	if (old != NULL) {
		metrics_inc("walua_reloads_total", "result=\"ok\"", 1);
		note_reload(1, NULL);
		sd_notify_msg("READY=1");
	}
	gen_maybe_free(old);
}

static void
abandon(struct gen *g)
{
	struct worker	*w;
	char		*line, *save = NULL;

	for (line = strtok_r(g->errors.data, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save))
		log_kv(LOG_ERROR, current ? "reload failed" : "cannot load "
		    "handlers", "error", line, NULL);
	for (w = workers; w != NULL; w = w->next)
		if (w->gen == g && w->state != W_CLOSED) {
			kill(w->pid, SIGKILL);
			close_worker(w);
		}
	if (current != NULL) {
		metrics_inc("walua_reloads_total", "result=\"error\"", 1);
		note_reload(0, g->errors.data);
		sd_notify_msg("READY=1");
	}
	loading = NULL;
	gen_maybe_free(g);
}

/* Start loading a new generation from cfg (the caller's reference). */
static int
start_gen(struct config *cfg)
{
	struct gen	*g;
	char		 err[1024];
	int		 i;

	if ((g = gen_new(cfg, err, sizeof(err))) == NULL) {
		log_kv(LOG_ERROR, current ? "reload failed" : "cannot load "
		    "handlers", "error", err, NULL);
		if (current != NULL) {
			metrics_inc("walua_reloads_total", "result=\"error\"", 1);
			note_reload(0, err);
		}
		return -1;
	}
	loading = g;
	for (i = 0; i < g->target; i++)
		if (spawn(g) == NULL) {
			g->failed = 1;
			buf_puts(&g->errors, "cannot start a worker process");
			break;
		}
	return 0;
}

/* Keep the settings that need a restart; say so when they changed. */
static void
keep_restart_keys(struct config *n, const struct config *o)
{
#define KEEP_STR(f, name) \
	if (strcmp(n->f, o->f) != 0) { \
		log_kv(LOG_WARN, "setting changed: restart walua to apply it", \
		    "key", name, NULL); \
		char *t = n->f; n->f = strdup(o->f); free(t); \
	}
#define KEEP_INT(f, name) \
	if (n->f != o->f) { \
		log_kv(LOG_WARN, "setting changed: restart walua to apply it", \
		    "key", name, NULL); \
		n->f = o->f; \
	}
	KEEP_STR(listen, "listen");
	if ((n->admin_listen == NULL) != (o->admin_listen == NULL) ||
	    (n->admin_listen != NULL && strcmp(n->admin_listen,
	    o->admin_listen) != 0)) {
		log_kv(LOG_WARN, "setting changed: restart walua to apply it",
		    "key", "admin_listen", NULL);
		free(n->admin_listen);
		free(n->admin_host);
		n->admin_listen = o->admin_listen ? strdup(o->admin_listen) :
		    NULL;
		n->admin_host = o->admin_host ? strdup(o->admin_host) : NULL;
		n->admin_port = o->admin_port;
	}
	KEEP_STR(database, "database");
	KEEP_INT(workers, "workers");
	/* the writer's connection was opened with it */
	KEEP_INT(durability, "durability");
	KEEP_INT(http_threads, "http.threads");
	KEEP_INT(http_max_connections, "http.max_connections");
	KEEP_INT(http_per_ip, "http.per_ip_connections");
	KEEP_INT(http_timeout_s, "http.timeout_s");
	KEEP_INT(http_header_timeout_s, "http.header_timeout_s");
#undef KEEP_STR
#undef KEEP_INT
}

static void
reload(void)
{
	struct config	*cfg;
	char		 err[4096];

	if (loading != NULL) {		/* coalesce: one more after this one */
		reload_pending = 1;
		return;
	}
	log_msg(LOG_INFO, "reloading %s", config_file ? config_file :
	    "the built-in configuration");
	sd_notify_msg("RELOADING=1");
	if ((cfg = config_load(config_file, err, sizeof(err))) == NULL) {
		log_kv(LOG_ERROR, "reload failed", "error", err, NULL);
		metrics_inc("walua_reloads_total", "result=\"error\"", 1);
		note_reload(0, err);
		sd_notify_msg("READY=1");
		return;
	}
	keep_restart_keys(cfg, current->cfg);
	if (cfg->listen == NULL || cfg->database == NULL) {
		config_put(cfg);
		sd_notify_msg("READY=1");
		return;
	}
	/* the same file: reopen it now (after logrotate moved it); another
	 * one only once the new generation is running (activate) */
	if (same_log_file(cfg, current->cfg))
		reopen_log(cfg);
	if (start_gen(cfg) == -1)
		sd_notify_msg("READY=1");
}

static void
on_frame(struct worker *w, char type, const char *p, size_t len)
{
	static struct metric *handled_ok, *duration;
	struct gen	*g = w->gen;
	struct qitem	*it;
	char		 result[16], *end;
	long long	 us = 0;
	const char	*nl, *q, *e = p + len;
	size_t		 i;
	long		 slot;
	int		 retire;

	if (type == IPC_READY) {
		if (w->state != W_LOADING)
			return;
		if (len == 2 && memcmp(p, "ok", 2) == 0) {
			if (slots_init(w) == -1) {
				kill(w->pid, SIGKILL);
				worker_lost(w);
				return;
			}
			w->state = W_READY;
			if (g == loading && ++g->nready == g->target &&
			    !g->failed)
				activate(g);
			else if (g != loading && g != current)
				close_worker(w);	/* late: retired */
			return;
		}
		if (g->errors.len == 0)
			buf_append(&g->errors, p, len);
		g->failed = 1;
		if (g != loading) {
			log_kv(LOG_ERROR, "worker cannot load handlers", "error",
			    g->errors.data, NULL);
			g->respawn_ms = queue_now_ms() + 1000;
		}
		close_worker(w);
		return;
	}
	if (type == IPC_METRIC) {
		/* family\0labels\0value */
		const char *z1 = memchr(p, '\0', len), *z2;
		char labels[256], value[32];

		if (z1 == NULL || (z2 = memchr(z1 + 1, '\0',
		    (size_t)(e - z1 - 1))) == NULL ||
		    (size_t)(z2 - z1 - 1) >= sizeof(labels) ||
		    (size_t)(e - z2 - 1) >= sizeof(value))
			return;
		memcpy(labels, z1 + 1, (size_t)(z2 - z1 - 1));
		labels[z2 - z1 - 1] = '\0';
		memcpy(value, z2 + 1, (size_t)(e - z2 - 1));
		value[e - z2 - 1] = '\0';
		metrics_record(p, labels[0] ? labels : NULL, strtod(value, NULL));
		return;
	}
	if (type != IPC_DONE || w->state != W_READY)
		return;
	/* "<slot>\t<result>\t<microseconds>[\tretire]\n<error>" */
	slot = strtol(p, &end, 10);
	if (end == p || end >= e || *end != '\t' || slot < 0 ||
	    slot >= w->nslots || w->slots[slot].it == NULL)
		return;
	q = end + 1;
	for (i = 0; q + i < e && i < sizeof(result) - 1 && q[i] >= 'a' &&
	    q[i] <= 'z'; i++)
		result[i] = q[i];
	result[i] = '\0';
	q += i;
	if (q < e && *q == '\t')
		for (q++; q < e && *q >= '0' && *q <= '9' &&
		    us < LLONG_MAX / 10 - 9; q++)
			us = us * 10 + (*q - '0');
	nl = memchr(p, '\n', len);
	retire = nl != NULL && (size_t)(nl - p) > 7 &&
	    memcmp(nl - 7, "\tretire", 7) == 0;
	it = slot_give(w, (int)slot);
	if (handled_ok == NULL) {	/* kept: counted for every event */
		duration = metrics_series("walua_handler_duration_seconds",
		    NULL);
		handled_ok = metrics_series("walua_events_handled_total",
		    "result=\"ok\"");
	}
	metrics_sample(duration, (double)us / 1e6);
	if (strcmp(result, "ok") == 0) {
		metrics_add(handled_ok, 1);
		inbox_note_rank(it->message_id, kv_rank_of(it->status));
		inbox_done(it, us);
		queue_done(it);
	} else {
		char *msg = strndup(nl ? nl + 1 : "",
		    nl ? len - (size_t)(nl + 1 - p) : 0);
		fail_item(it, strcmp(result, "timeout") == 0 ? "timeout" :
		    "error", msg ? msg : "handler failed");
		free(msg);
	}
	if (retire)
		w->retiring = 1;	/* a full state: no more events */
	/* a retired generation's worker, or a full one, once it is idle */
	if ((g != current || w->retiring) && w->inflight == 0)
		close_worker(w);
}

static void
read_worker(struct worker *w)
{
	const char	*p;
	size_t		 len;
	char		 type;
	int		 rc, eof;

	eof = ipc_fill(&w->rd, w->fd) == -1;
	while ((rc = ipc_next(&w->rd, &type, &p, &len)) == 1) {
		on_frame(w, type, p, len);
		if (w->fd == -1)
			return;
	}
	if (rc == -1 || eof)
		worker_lost(w);
}

static void
reap(void)
{
	struct worker	**pp, *w;
	pid_t		 pid;
	int		 status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (pp = &workers; (w = *pp) != NULL; pp = &w->next)
			if (w->pid == pid)
				break;
		if (w == NULL)
			continue;
		/* what it wrote before exiting may not have been read yet */
		if (w->fd != -1)
			read_worker(w);
		if (w->state != W_CLOSED)
			worker_lost(w);
		if (WIFSIGNALED(status) && !w->killed &&
		    WTERMSIG(status) != SIGKILL)
			log_msg(LOG_WARN, "worker %d killed by signal %d",
			    (int)pid, WTERMSIG(status));
		else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
			log_msg(LOG_WARN, "worker %d exited with status %d",
			    (int)pid, WEXITSTATUS(status));
		*pp = w->next;
		w->gen->nlive--;
		metrics_inc("walua_workers", NULL, -1);
		atomic_fetch_sub(&pub_workers, 1);
		gen_maybe_free(w->gen);
		worker_free(w);
	}
}

/* A status of lower rank than one already handled for its message. */
static int
stale(const struct qitem *it)
{
	int	rank = kv_rank_of(it->status);

	return rank > 0 && it->message_id != NULL &&
	    inbox_handled_rank(it) > rank;
}

/*
 * How busy w is: 0, waiting in its loop; 1, running an event's Lua
 * (since *since, ms); 2, that for far longer than its slices usually
 * take: four times as long, 2 ms at least, STALL_MS at most.  Likely
 * stuck in C, where no slice ends it, or at least slow: what w is sent
 * waits behind it.  Judged against w's own usual slice, a stuck worker
 * is passed over a few milliseconds after it stopped, not STALL_MS after.
 */
static int
busyness(const struct worker *w, int64_t now, int64_t *since)
{
	int64_t	limit = 4 * (int64_t)atomic_load(&w->shm->slice_us);

	*since = atomic_load(&w->shm->running_since);
	if (atomic_load(&w->shm->running) == 0)
		return 0;
	if (limit < 2000)
		limit = 2000;
	if (limit > STALL_MS * 1000)
		limit = STALL_MS * 1000;
	return (now - *since) * 1000 > limit ? 2 : 1;
}

/*
 * The worker of the current generation to give the next event to: the
 * least busy of those with a free slot and whose socket took what was
 * written (a worker stuck in C does not read: its events wait here).
 * What a busy worker is sent waits behind its Lua: prefer the idlest,
 * then the one with fewer events, then the one whose Lua began last.
 * Of two stalled ones, the one stalled longer is the likelier to be
 * stuck: the one whose Lua began last comes first.
 */
static struct worker *
least_busy(int64_t now)
{
	struct worker	*w, *best = NULL;
	int		 busy, best_busy = 0, take;
	int64_t		 since, best_since = 0;

	for (w = workers; w != NULL; w = w->next) {
		if (w->gen != current || w->state != W_READY || w->retiring ||
		    w->inflight >= w->nslots || w->blocked)
			continue;
		busy = busyness(w, now, &since);
		if (best == NULL || busy != best_busy)
			take = best == NULL || busy < best_busy;
		else if (busy == 2 && since != best_since)
			take = since > best_since;
		else if (w->inflight != best->inflight)
			take = w->inflight < best->inflight;
		else
			take = busy == 1 && since > best_since;
		if (take) {
			best = w;
			best_busy = busy;
			best_since = since;
		}
	}
	return best;
}

/* Write what w has waiting, as far as its socket takes it. */
static void
flush_worker(struct worker *w)
{
	ssize_t	n;

	while (w->out.len > 0) {
		n = send(w->fd, w->out.data, w->out.len, MSG_DONTWAIT |
		    MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			w->blocked = 1;	/* poll says when it has room */
			return;
		}
		if (n == -1) {
			kill(w->pid, SIGKILL);
			worker_lost(w);
			return;
		}
		memmove(w->out.data, w->out.data + n, w->out.len - (size_t)n);
		w->out.len -= (size_t)n;
	}
	w->blocked = 0;
}

/* s and then sep into b. */
static int
put_field(struct buf *b, const char *s, char sep)
{
	return buf_puts(b, s) == -1 ? -1 : buf_append(b, &sep, 1);
}

/* n in decimal, then sep, into b. */
static int
put_int(struct buf *b, long long n, char sep)
{
	char			 tmp[24], *p = tmp + sizeof(tmp);
	unsigned long long	 u = n < 0 ? 0 - (unsigned long long)n :
				    (unsigned long long)n;

	*--p = sep;
	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u > 0);
	if (n < 0)
		*--p = '-';
	return buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

/*
 * An event frame's header into b, for the worker (worker.c reads it):
 * slot, id, attempts, "stale" or nothing, kind, message id, status rank
 * and conversation, tab-separated.  Put together by hand, not by
 * buf_printf: it runs for every event, and parsing the format cost more
 * than the copies.  Its fixed part stays under
 * IPC_EVENT_SLACK (ipc.h).
 */
static int
event_header(struct buf *b, int slot, const struct qitem *it)
{
	buf_reset(b);
	return put_int(b, slot, '\t') == -1 ||
	    put_field(b, it->id, '\t') == -1 ||
	    put_int(b, it->attempts, '\t') == -1 ||
	    put_field(b, stale(it) ? "stale" : "", '\t') == -1 ||
	    put_field(b, it->kind ? it->kind : "", '\t') == -1 ||
	    put_field(b, it->message_id ? it->message_id : "", '\t') == -1 ||
	    put_int(b, kv_rank_of(it->status), '\t') == -1 ||
	    put_field(b, it->conv ? it->conv : "", '\n') == -1 ? -1 : 0;
}

/*
 * Hand ready events to the workers of the current generation, each up
 * to limits.handler_concurrency at once (every one is a coroutine there).
 *
 * A handler's success reaches the database with the inbox writer's next
 * group commit, not before the worker takes another event: that keeps
 * workers off the database's write lock.  What a crash of walua would
 * run again is what is running plus what is handled but not yet marked;
 * holding events back while those marks reach MARKS_AHEAD per worker
 * keeps that bound (README, Handler scripts and the Lua API).  The
 * writer wakes us after the commit of those marks.
 */
static void
dispatch(void)
{
	static struct buf hdr;
	struct worker	*w;
	struct qitem	*it;
	int		 timeout, slot;
	int64_t		 now;

	if (current == NULL)
		return;
	timeout = current->cfg->limits.handler_timeout_ms;
	now = queue_now_ms();
	while ((w = least_busy(now)) != NULL) {
		if (inbox_unmarked() >= MARKS_AHEAD * current->target) {
			inbox_flush();
			/* marks committed meanwhile did not wake us: go on */
			if (inbox_unmarked() >= MARKS_AHEAD * current->target)
				break;
		}
		if ((it = queue_take()) == NULL)
			break;
		/* the worker's own timer stops it at 1x; we step in at 1.5x */
		slot = slot_take(w, it, now + timeout + timeout / 2);
		if (event_header(&hdr, slot, it) == -1 ||
		    ipc_frame(&w->out, IPC_EVENT, hdr.data, hdr.len, it->body,
		    it->bodylen, NULL, 0) == -1) {
			kill(w->pid, SIGKILL);
			worker_lost(w);
			continue;
		}
		/* many events for one worker go out in few writes */
		if (w->out.len >= 65536)
			flush_worker(w);
	}
	for (w = workers; w != NULL; w = w->next)
		if (w->fd != -1 && w->out.len > 0)
			flush_worker(w);
}

/*
 * A worker still loading past its deadline: kill it, and fail the
 * generation it was loading (a respawn of the running one is simply
 * respawned again, after the crash-loop brake).
 */
static void
load_overdue(struct worker *w)
{
	struct gen	*g = w->gen;
	char		 msg[128];

	snprintf(msg, sizeof(msg), "worker %d did not load the handler "
	    "scripts within %lld ms", (int)w->pid,
	    (long long)(w->load_kill_ms - w->load_started_ms));
	if (g == loading) {
		g->failed = 1;
		if (g->errors.len == 0)
			buf_puts(&g->errors, msg);
	} else {
		log_kv(LOG_ERROR, "worker cannot load handlers", "error", msg,
		    NULL);
		g->respawn_ms = queue_now_ms() + 1000;
	}
	w->killed = 1;
	kill(w->pid, SIGKILL);
	close_worker(w);
}

/*
 * An event of w is past 1.5x its budget and w has not said so: w is stuck
 * where its own timers cannot run (C code, as a long string.find).  Kill
 * it, blaming the event whose Lua runs (the shared page says which), or
 * else the oldest; lost_events sorts out the rest.
 */
static void
overdue(struct worker *w)
{
	int culprit = atomic_load(&w->shm->running) - 1;

	if (culprit < 0 || culprit >= w->nslots ||
	    w->slots[culprit].it == NULL)
		culprit = w->oldest;
	w->killed = 1;
	w->culprit = culprit;
	log_event(LOG_WARN, "stopping worker: handler past its budget",
	    w->slots[culprit].it, NULL, NULL, NULL, NULL);
	kill(w->pid, SIGKILL);
}

/* Kill workers past their budget; keep the current generation staffed. */
static int64_t
supervise(int64_t now)
{
	struct worker	*w;
	int64_t		 next = now + 1000;
	int		 live = 0;

	for (w = workers; w != NULL; w = w->next) {
		if (w->state == W_LOADING) {
			if (now >= w->load_kill_ms)
				load_overdue(w);
			else if (w->load_kill_ms < next)
				next = w->load_kill_ms;
		}
		if (w->state == W_READY && w->oldest != -1 && !w->killed) {
			if (now >= w->slots[w->oldest].kill_ms)
				overdue(w);
			else if (w->slots[w->oldest].kill_ms < next)
				next = w->slots[w->oldest].kill_ms;
		}
		if (w->gen == current && w->state != W_CLOSED && !w->retiring)
			live++;
	}

	if (current != NULL && !stopping) {
		for (; live < current->target; live++) {
			if (now < current->respawn_ms) {
				if (current->respawn_ms < next)
					next = current->respawn_ms;
				break;
			}
			current->respawn_ms = now + 200;
			if (spawn(current) == NULL)
				break;
		}
	}
	return next;
}

static void
refresh_gauges(void)
{
	struct queue_stats	st;
	double			age = 0;

	queue_stats(&st);
	if (st.oldest_ms != 0)
		age = (double)(queue_now_ms() - st.oldest_ms) / 1000;
	metrics_set("walua_inbox_pending", NULL, (double)(st.waiting +
	    st.retrying));
	metrics_set("walua_inbox_inflight", NULL, (double)st.inflight);
	metrics_set("walua_inbox_unmarked", NULL, (double)inbox_unmarked());
	metrics_set("walua_handlers_inflight", NULL, (double)st.inflight);
	metrics_set("walua_outbound_inflight", NULL, (double)outbound());
	metrics_set("walua_inbox_oldest_pending_seconds", NULL, age);
	metrics_set("walua_dead_letters", NULL, (double)inbox_dead_count());
}

static int
poll_once(int64_t deadline)
{
	struct pollfd	 fds[260];
	struct worker	*ws[260];
	struct worker	*w;
	int		 n = 0, i, timeout, chld = 0;
	int64_t		 now = queue_now_ms();
	static int64_t	 last_reap;
	unsigned char	 sig;

	fds[n].fd = sigpipe[0];
	fds[n++].events = POLLIN;
	fds[n].fd = queue_wake_fd();
	fds[n++].events = POLLIN;
	fds[n].fd = upgrade_child_fd();		/* -1: poll skips it */
	fds[n++].events = POLLIN;
	for (w = workers; w != NULL && n < 260; w = w->next)
		if (w->fd != -1) {
			ws[n] = w;
			fds[n].fd = w->fd;
			fds[n++].events = POLLIN | (w->out.len > 0 ? POLLOUT : 0);
		}
	timeout = deadline <= now ? 0 : (int)(deadline - now);
	if (poll(fds, (nfds_t)n, timeout) == -1) {
		if (errno != EINTR)
			log_msg(LOG_ERROR, "poll: %s", strerror(errno));
		return 0;
	}
	if (fds[0].revents & POLLIN)
		while (read(sigpipe[0], &sig, 1) == 1) {
			if (sig == SIGHUP && !stopping)
				reload();
			else if ((sig == SIGTERM || sig == SIGINT) && !stopping)
				return 1;
			else if (sig == SIGCHLD)
				chld = 1;
			else if (sig == SIGUSR1)
				reopen_logs();
			else if (sig == SIGUSR2 && !stopping)
				upgrade_start(httpd_listen_fd(0),
				    httpd_listen_fd(1));
		}
	if (fds[1].revents & POLLIN)
		queue_clear_wake();
	/* the new binary is ready: stop as on SIGTERM, which hands over */
	if (upgrade_poll(fds[2].revents != 0) && !stopping) {
		char	msg[32];

		snprintf(msg, sizeof(msg), "MAINPID=%ld",
		    (long)upgrade_child());
		sd_notify_msg(msg);
		return 1;
	}
	for (i = 3; i < n; i++) {
		if (fds[i].revents == 0 || ws[i]->fd != fds[i].fd)
			continue;
		if ((fds[i].revents & POLLOUT) && ws[i]->out.len > 0)
			flush_worker(ws[i]);
		if (ws[i]->fd == fds[i].fd && (fds[i].revents & ~POLLOUT))
			read_worker(ws[i]);
	}
	/* on SIGCHLD, and each second should one have been missed */
	if (chld || now - last_reap >= 1000) {
		last_reap = now;
		reap();
	}
	return 0;
}

/* One turn of the loop's bookkeeping; returns when to look again. */
static int64_t
turn(void)
{
	int64_t now = queue_now_ms(), next, due;

	if (loading != NULL && loading->failed) {
		abandon(loading);
		if (reload_pending) {
			reload_pending = 0;
			reload();
		}
	}
	if (loading == NULL && reload_pending) {
		reload_pending = 0;
		reload();
	}
	due = queue_tick(now);
	dispatch();
	next = supervise(now);
	if (due != -1 && due < next)
		next = due;
	return next;
}

/*
 * Install the signal handlers and load the first generation from cfg
 * (taking the caller's reference); returns once its workers are ready
 * (0) or it failed to load (-1, errors logged).
 */
int
pool_start(const char *file, struct config *cfg)
{
	struct sigaction sa;

	config_file = file;
	if (pipe2(sigpipe, O_NONBLOCK | O_CLOEXEC) == -1)
		return -1;
	/* above the fds a worker is given (see spawn) */
	if ((pace_fd = pace_create()) == -1)
		log_msg(LOG_WARN, "no shared pace of sends (each worker paces "
		    "alone): %s", strerror(errno));
	else
		pace_fd = fd_above(pace_fd, WORKER_PACE_FD);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	metrics_on_render(refresh_gauges);

	if (start_gen(cfg) == -1)
		return -1;
	while (loading != NULL && !loading->failed) {
		if (poll_once(supervise(queue_now_ms())))
			return -1;
	}
	if (loading != NULL) {
		abandon(loading);
		return -1;
	}
	return current != NULL ? 0 : -1;
}

/*
 * Run until SIGTERM or SIGINT; then stop the HTTP side (stop_fn), finish
 * what is queued within limits.shutdown_timeout_ms, and stop the workers.
 * Returns the process exit status.
 */
int
pool_run(void (*stop_fn)(void))
{
	struct queue_stats	 st;
	struct worker		*w;
	int64_t			 next, end;
	char			 n[32];

	stop_http = stop_fn;
	for (;;) {
		next = turn();
		if (stopping) {
			queue_stats(&st);
			if (st.waiting + st.inflight == 0 ||
			    queue_now_ms() >= stop_deadline)
				break;
			if (stop_deadline < next)
				next = stop_deadline;
		}
		if (poll_once(next) && !stopping) {
			log_msg(LOG_INFO, "stopping: no new requests; finishing "
			    "queued events");
			stopping = 1;
			sd_notify_msg("STOPPING=1");
			stop_deadline = queue_now_ms() +
			    current->cfg->limits.shutdown_timeout_ms;
			if (stop_http != NULL)
				stop_http();
		}
	}
	/* closing the sockets tells idle workers to exit */
	for (w = workers; w != NULL; w = w->next)
		if (w->inflight == 0)
			close_worker(w);
	end = queue_now_ms() + 2000;
	while (workers != NULL && queue_now_ms() < end) {
		reap();
		if (workers != NULL)
			usleep(10000);
	}
	for (w = workers; w != NULL; w = w->next)
		kill(w->pid, SIGKILL);
	while (workers != NULL) {
		reap();
		if (workers != NULL)
			usleep(10000);
	}
	queue_stats(&st);
	if (st.waiting + st.inflight + st.retrying > 0) {
		snprintf(n, sizeof(n), "%ld", st.waiting + st.inflight +
		    st.retrying);
		log_kv(LOG_WARN, "stopped with events not handled yet (kept in "
		    "the inbox for the next start)", "#events", n, NULL);
	}
	log_msg(LOG_INFO, "stopped");
	return 0;
}

/* Free what the supervisor holds (after pool_run). */
void
pool_free(void)
{
	gen_free(current);
	gen_free(loading);
	current = loading = NULL;
	if (sigpipe[0] != -1) {
		close(sigpipe[0]);
		close(sigpipe[1]);
	}
	if (pace_fd != -1)
		close(pace_fd);
	pace_fd = -1;
}

/* For the HTTP threads: the running generation and live workers. */
int
pool_generation(void)
{
	return atomic_load(&pub_generation);
}

int
pool_workers(void)
{
	return atomic_load(&pub_workers);
}
