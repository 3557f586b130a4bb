/*
 * worker.c - the handler worker process: one sandboxed Lua state running
 * up to limits.handler_concurrency events at once, each in a coroutine
 * of its own, fed by the supervisor over fd 3.  One thread and one event
 * loop (evloop.c): a frame from the supervisor starts an event; a
 * handler's walua.http or walua.sleep yields its coroutine, and the loop
 * resumes it when the transfer (fetch.c) or the timer is over, so
 * handlers waiting on the network take no process while they wait.
 *
 * Protocol (ipc.h frames):
 *   LOAD   u32 config length, config JSON, then for each handler script
 *          u32 path length, path, u32 source length, source
 *   READY  "ok", or the load errors, one per line
 *   EVENT  "<slot>\t<id>\t<attempt>\t<flags>\t<kind>\t<message id>\t
 *          <status rank>\t<conversation>\n<event JSON>"; flags is "stale"
 *          for a status older than one already handled; slot names the
 *          event in DONE
 *   DONE   "<slot>\t<ok|error|timeout|nomem>\t<microseconds>[\tretire]\n
 *          <error>"; "retire": the worker takes no more events (its state
 *          ran out of memory) and exits once its events are over
 *   METRIC "<family>\0<labels>\0<value>": added, or observed (histogram)
 * The supervisor has the inbox writer record the outcome.  The worker
 * exits when the supervisor closes the socket.  A worker that hangs where
 * no hook reaches is killed by the supervisor; the page shared with it
 * (struct worker_shm) says which event's Lua was running then.
 */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <lua.h>

#include "buf.h"
#include "client.h"
#include "config.h"
#include "evloop.h"
#include "event.h"
#include "fetch.h"
#include "ipc.h"
#include "lb.h"
#include "lb_ctx.h"
#include "lhost.h"
#include "log.h"
#include "pace.h"

static int
get_u32(const char **p, const char *end, uint32_t *v)
{
	const unsigned char *u = (const unsigned char *)*p;

	if (end - *p < 4)
		return -1;
	*v = (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 |
	    (uint32_t)u[2] << 8 | u[3];
	*p += 4;
	return 0;
}

/*
 * The Lua state handler scripts load into, as a worker builds it: its
 * memory cap, walua.settings and walua.store for cfg.  `walua check`
 * loads the scripts into the same, so a script that passes check loads
 * in serve.  NULL with the reason in err.
 */
struct lhost *
worker_state(const struct config *cfg, char *err, size_t errlen)
{
	struct lhost	*h;

	lb_store_setup(cfg->database, cfg->durability);
	if ((h = lhost_new((size_t)cfg->limits.handler_memory_mb << 20, err,
	    errlen)) == NULL)
		return NULL;
	if (lhost_set_settings(h, cfg->json, cfg->jsonlen) == -1) {
		snprintf(err, errlen, "sandbox: cannot set walua.settings");
		lhost_free(h);
		return NULL;
	}
	return h;
}

/* Load config and scripts from a LOAD frame; errors go in errs. */
static struct lhost *
load(const char *p, size_t len, struct config **cfgp, struct buf *errs)
{
	const char	*end = p + len, *path, *src;
	uint32_t	 n, pl, sl;
	struct config	*cfg;
	struct lhost	*h;
	char		 err[8192], pathbuf[4096];

	if (get_u32(&p, end, &n) == -1 || n > (size_t)(end - p)) {
		buf_puts(errs, "bad LOAD frame");
		return NULL;
	}
	if ((cfg = config_from_json(p, n, err, sizeof(err))) == NULL) {
		buf_puts(errs, err);
		return NULL;
	}
	p += n;
	log_set_level(cfg->log_level);
	if ((h = worker_state(cfg, err, sizeof(err))) == NULL) {
		buf_puts(errs, err);
		config_free(cfg);
		return NULL;
	}
	while (p < end) {
		if (get_u32(&p, end, &pl) == -1 || pl > (size_t)(end - p) ||
		    pl >= sizeof(pathbuf))
			break;
		path = p;
		p += pl;
		if (get_u32(&p, end, &sl) == -1 || sl > (size_t)(end - p))
			break;
		src = p;
		p += sl;
		memcpy(pathbuf, path, pl);
		pathbuf[pl] = '\0';
		if (lhost_load(h, pathbuf, src, sl,
		    cfg->limits.handler_timeout_ms, err, sizeof(err)) != 0) {
			if (errs->len > 0)
				buf_puts(errs, "\n");
			buf_puts(errs, err);
		}
	}
	if (p != end && errs->len == 0)
		buf_puts(errs, "bad LOAD frame");
	if (errs->len > 0) {
		lhost_free(h);
		config_free(cfg);
		return NULL;
	}
	*cfgp = cfg;
	return h;
}

enum { F_SLOT, F_ID, F_ATTEMPT, F_FLAGS, F_KIND, F_MSGID, F_RANK, F_CONV,
    NFIELDS };

/* One event in flight: its coroutine (lt.ctx first) and what it waits on. */
struct task {
	struct lhost_task	 lt;
	int			 slot;		/* the supervisor's name for it */
	int			 used;
	char			 id[EVENT_ID_LEN + 1];
	char			*conv, *msgid;
	int64_t			 t0_ns;
	struct fetch		*f;		/* the transfer it waits on */
	struct evloop_timer	 sleep;		/* or the pause */
	struct evloop_timer	 deadline;
	int			 ready;		/* on the run list */
	struct task		*rnext;
};

static struct lhost	*host;
static struct config	*wcfg;
static struct task	*tasks;			/* by slot */
static int		 ntasks, nrunning, retiring;
static struct task	*run_head, *run_tail;
static struct buf	 out;			/* frames to the supervisor */
static struct worker_shm *shm, shm_local;

/* Split the tab-separated header s in place into n fields. */
static int
split(char *s, char **f, int n)
{
	int	i;

	for (i = 0; i < n; i++) {
		f[i] = s;
		if (i < n - 1) {
			if ((s = strchr(s, '\t')) == NULL)
				return -1;
			*s++ = '\0';
		}
	}
	return 0;
}

/* Still above 90% of the memory cap after a full collection? */
static int
near_cap(struct lhost *h)
{
	if (h->mem.limit == 0 || h->mem.used < h->mem.limit / 10 * 9)
		return 0;
	lhost_collect(h);
	return h->mem.used >= h->mem.limit / 10 * 9;
}

/* walua.http's metrics go to the supervisor, which keeps /metrics. */
static void
send_metric(const char *family, const char *labels, double value)
{
	char	v[32];
	int	n = snprintf(v, sizeof(v), "%.9g", value);

	if (labels == NULL)
		labels = "";
	ipc_frame(&out, IPC_METRIC, family, strlen(family) + 1, labels,
	    strlen(labels) + 1, v, (size_t)n);
}

static const char *
result_name(int rc)
{
	switch (rc) {
	case LHOST_OK:		return "ok";
	case LHOST_TIMEOUT:	return "timeout";
	case LHOST_NOMEM:	return "nomem";
	default:		return "error";
	}
}

static void
ready(struct task *t)
{
	if (t->ready)
		return;
	t->ready = 1;
	t->rnext = NULL;
	if (run_tail != NULL)
		run_tail->rnext = t;
	else
		run_head = t;
	run_tail = t;
}

/* The host services of lb_ctx.h, for the coroutines of this worker. */
static void
on_fetched(struct fetch *f, void *arg)
{
	(void)f;
	ready(arg);
}

static void *
async_fetch(struct lb_ctx *ctx, const struct client_req *req,
    struct buf *body, struct buf *headers, char *err, size_t errlen)
{
	struct task *t = (struct task *)ctx;

	if ((t->f = fetch_start(req, body, headers, on_fetched, t, err,
	    errlen)) != NULL)
		atomic_store(&shm->outbound, fetch_inflight());
	return t->f;
}

static int
async_fetch_end(struct lb_ctx *ctx, void *fp, int *status, double *seconds,
    char *err, size_t errlen)
{
	struct task	*t = (struct task *)ctx;
	struct fetch	*f = fp;
	int		 rc;

	rc = fetch_result(f, status, err, errlen);
	*seconds = fetch_seconds(f);
	fetch_free(f);
	t->f = NULL;
	atomic_store(&shm->outbound, fetch_inflight());
	return rc;
}

static void
on_slept(struct evloop_timer *tm)
{
	ready(tm->arg);
}

static int
async_sleep(struct lb_ctx *ctx, int64_t ms)
{
	struct task *t = (struct task *)ctx;

	return evloop_timer_start(&t->sleep, evloop_now_ms() + ms);
}

static const struct lb_async async = { async_fetch, async_fetch_end,
    async_sleep };

/* Take t off the run list (it ended before its turn came). */
static void
unready(struct task *t)
{
	struct task **pp, *prev = NULL;

	for (pp = &run_head; *pp != NULL; prev = *pp, pp = &(*pp)->rnext)
		if (*pp == t) {
			*pp = t->rnext;
			if (run_tail == t)
				run_tail = prev;
			break;
		}
	t->ready = 0;
}

/* t is over (rc, err): report it, free what it held, free its slot. */
static void
finish(struct task *t, int rc, const char *err)
{
	long long	us = (lb_ctx_now_ns() - t->t0_ns) / 1000;
	int		retire_now;
	char		head[96];

	if (t->f != NULL) {
		fetch_free(t->f);
		t->f = NULL;
		atomic_store(&shm->outbound, fetch_inflight());
	}
	evloop_timer_stop(&t->sleep);
	evloop_timer_stop(&t->deadline);
	if (t->ready)
		unready(t);
	lhost_end(host, &t->lt);
	/*
	 * A state that ran out of memory may keep what filled it (tables
	 * held in upvalues): this worker retires, and says so, so that no
	 * event is handed to it; its other events finish first.
	 */
	retire_now = !retiring && (rc == LHOST_NOMEM || near_cap(host));
	if (retire_now) {
		retiring = 1;
		log_msg(LOG_WARN, "worker %d: its Lua state is at its memory "
		    "cap; replacing it once its %d other events are over",
		    (int)getpid(), nrunning - 1);
	}
	snprintf(head, sizeof(head), "%d\t%s\t%lld%s\n", t->slot,
	    result_name(rc), us, retire_now ? "\tretire" : "");
	ipc_frame(&out, IPC_DONE, head, strlen(head), err, rc == LHOST_OK ?
	    0 : strlen(err), NULL, 0);
	free(t->conv);
	free(t->msgid);
	t->conv = t->msgid = NULL;
	t->used = 0;
	nrunning--;
}

static int64_t	slice_ns;	/* when the Lua running now began */

/* The supervisor's view: slot's Lua runs from now_ns on. */
static void
mark_running(int slot, int64_t now_ns)
{
	slice_ns = now_ns;
	atomic_store(&shm->running_since, now_ns / 1000000);
	atomic_store(&shm->running, slot + 1);
}

/* After a start or a resume: t finished, or waits, or misused a yield. */
static void
settle(struct task *t, int rc, const char *err)
{
	static int	measured;
	int		avg = atomic_load(&shm->slice_us);
	int64_t		us = (lb_ctx_now_ns() - slice_ns) / 1000;

	atomic_store(&shm->running, 0);
	/* about the last 8 slices; the first replaces the supervisor's guess */
	if (us > INT_MAX / 2)
		us = INT_MAX / 2;
	atomic_store(&shm->slice_us, !measured ? (int)us :
	    avg + ((int)us - avg) / 8);
	measured = 1;
	if (rc != LHOST_YIELD) {
		finish(t, rc, err);
		return;
	}
	if (t->lt.ctx.preempted) {		/* its slice is over */
		ready(t);
		return;
	}
	if (t->f == NULL && !evloop_timer_armed(&t->sleep))
		finish(t, LHOST_ERROR, "coroutine.yield() outside a coroutine "
		    "of the handler's own: nothing would resume it");
}

/* Its deadline passed while it waited: stop what it waits on, fail it. */
static void
on_deadline(struct evloop_timer *tm)
{
	struct task *t = tm->arg;

	finish(t, LHOST_TIMEOUT, t->f != NULL ? "handler timed out (waiting "
	    "on a transfer)" : evloop_timer_armed(&t->sleep) ? "handler timed "
	    "out (in walua.sleep)" : "handler timed out");
}

/* An EVENT frame: start it in its slot. */
static int
start_event(char *p, size_t len)
{
	char		*nl, *f[NFIELDS], err[16384];
	struct task	*t;
	int		 slot, rc, timeout = wcfg->limits.handler_timeout_ms;

	if ((nl = memchr(p, '\n', len)) == NULL)
		return -1;
	*nl = '\0';
	if (split(p, f, NFIELDS) == -1)
		return -1;
	slot = atoi(f[F_SLOT]);
	if (slot < 0 || slot >= ntasks || tasks[slot].used || retiring)
		return -1;
	t = &tasks[slot];
	memset(&t->lt, 0, sizeof(t->lt));
	snprintf(t->id, sizeof(t->id), "%s", f[F_ID]);
	t->conv = *f[F_CONV] ? strdup(f[F_CONV]) : NULL;
	t->msgid = *f[F_MSGID] ? strdup(f[F_MSGID]) : NULL;
	t->lt.ctx.ev_id = t->id;
	t->lt.ctx.ev_conv = t->conv;
	t->lt.ctx.ev_msgid = t->msgid;
	t->lt.ctx.async = &async;
	t->used = 1;
	t->t0_ns = lb_ctx_now_ns();
	nrunning++;
	evloop_timer_start(&t->deadline, t->t0_ns / 1000000 + timeout);
	err[0] = '\0';
	mark_running(slot, t->t0_ns);
	rc = lhost_start(host, &t->lt, nl + 1, len - (size_t)(nl + 1 - p),
	    atoi(f[F_ATTEMPT]), strcmp(f[F_FLAGS], "stale") == 0, timeout, err,
	    sizeof(err));
	settle(t, rc, err);
	return 0;
}

/*
 * Resume the tasks whose wait is over, in the order they became ready;
 * those that become ready meanwhile (a slice over) wait for the next turn
 * of the loop, so that it looks at sockets and timers in between.
 */
static void
run_ready(void)
{
	struct task	*t, *last = run_tail;
	char		 err[16384];
	int		 rc, more = 1;

	while (more && (t = run_head) != NULL) {
		more = t != last;
		run_head = t->rnext;
		if (run_head == NULL)
			run_tail = NULL;
		t->ready = 0;
		if (!t->used)
			continue;
		err[0] = '\0';
		mark_running(t->slot, lb_ctx_now_ns());
		rc = lhost_resume(host, &t->lt, err, sizeof(err));
		settle(t, rc, err);
	}
}

static int	 sup_eof;
static struct ipc_reader rd;

static void
on_supervisor(struct evloop_fd *w, unsigned events)
{
	const char	*p;
	size_t		 len;
	char		 type;
	int		 rc;

	(void)events;
	if (ipc_fill(&rd, w->fd) == -1)
		sup_eof = 1;
	while ((rc = ipc_next(&rd, &type, &p, &len)) == 1)
		if (type != IPC_EVENT || start_event((char *)p, len) == -1) {
			log_msg(LOG_ERROR, "worker %d: bad frame from the "
			    "supervisor", (int)getpid());
			sup_eof = 1;
			break;
		}
	if (rc == -1)
		sup_eof = 1;
}

/* The page shared with the supervisor, or a private one. */
static void
map_shm(void)
{
	void *p = mmap(NULL, sizeof(struct worker_shm), PROT_READ |
	    PROT_WRITE, MAP_SHARED, WORKER_SHM_FD, 0);

	shm = p == MAP_FAILED ? &shm_local : p;
	close(WORKER_SHM_FD);
	if (pace_attach(WORKER_PACE_FD) == -1)
		log_msg(LOG_WARN, "worker %d: no shared pace of sends: %s",
		    (int)getpid(), strerror(errno));
	close(WORKER_PACE_FD);
}

/* Serve events until the supervisor closes the socket. */
static void
serve(void)
{
	struct evloop_fd	sup = { WORKER_FD, on_supervisor, NULL };
	int			i;

	ntasks = wcfg->limits.handler_concurrency;
	if ((tasks = calloc((size_t)ntasks, sizeof(*tasks))) == NULL ||
	    evloop_init() == -1 || evloop_watch(&sup, EVLOOP_IN) == -1) {
		log_msg(LOG_ERROR, "worker %d: cannot start its loop: %s",
		    (int)getpid(), strerror(errno));
		return;
	}
	for (i = 0; i < ntasks; i++) {
		tasks[i].slot = i;
		tasks[i].sleep.index = tasks[i].deadline.index = -1;
		tasks[i].sleep.cb = on_slept;
		tasks[i].deadline.cb = on_deadline;
		tasks[i].sleep.arg = tasks[i].deadline.arg = &tasks[i];
	}
	lb_http_set_metric_hook(send_metric);
	/* EOF: retired (nothing runs), or the supervisor is gone */
	while (!sup_eof) {
		if (evloop_run_once(run_head != NULL ? 0 : 1000) == -1)
			break;
		run_ready();
		if (out.len > 0 && ipc_write(WORKER_FD, &out) == -1)
			break;
	}
	for (i = 0; i < ntasks; i++)
		if (tasks[i].used)
			finish(&tasks[i], LHOST_ERROR, "worker stopping");
	fetch_cleanup();
	evloop_free();
	free(tasks);
	tasks = NULL;
}

/*
 * SIGUSR1 from the supervisor: log_file was moved (logrotate); point fd 2
 * at a new file at its path.  open, dup2 and close are async-signal-safe.
 */
static char	log_path[4096];

static void
on_usr1(int sig)
{
	int	saved = errno, fd;

	(void)sig;
	if (log_path[0] != '\0' && (fd = open(log_path, O_WRONLY | O_APPEND |
	    O_CREAT | O_CLOEXEC, 0640)) != -1) {
		dup2(fd, 2);
		dup2(fd, 1);
		close(fd);
	}
	errno = saved;
}

int
worker_main(void)
{
	char		 type, *p;
	size_t		 len;

	pthread_setname_np(pthread_self(), "walua-worker");	/* not "exe" */
	/* the supervisor decides when workers stop; terminal signals go to it */
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGUSR1, on_usr1);	/* before any supervisor could send it */
	dup2(2, 1);		/* stray stdout from libraries lands in the log */
	/*
	 * A worker busy in C notices its supervisor's death only when it
	 * next reads its socket: with walua killed (kill -9, OOM killer) it
	 * would spin on alone.  The kernel ends it with its parent instead.
	 */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1)
		log_msg(LOG_WARN, "worker: prctl: %s", strerror(errno));
	map_shm();

	if (ipc_recv(WORKER_FD, &rd, &type, &p, &len) == 0 &&
	    type == IPC_LOAD) {
		host = load(p, len, &wcfg, &out);
		if (wcfg != NULL && wcfg->log_file != NULL &&
		    strlen(wcfg->log_file) < sizeof(log_path))
			memcpy(log_path, wcfg->log_file,
			    strlen(wcfg->log_file) + 1);
		if (host == NULL)
			ipc_send(WORKER_FD, IPC_READY, out.data, out.len, NULL,
			    0);
		else if (ipc_send(WORKER_FD, IPC_READY, "ok", 2, NULL, 0) == 0) {
			buf_reset(&out);
			serve();
		}
	}
	lhost_free(host);
	lb_store_close();
	client_cleanup();
	config_free(wcfg);
	ipc_reader_free(&rd);
	buf_free(&out);
	return 0;
}
