/*
 * worker.c - the handler worker process: one sandboxed Lua state, fed one
 * event at a time by the supervisor over fd 3.
 *
 * Protocol (ipc.h frames):
 *   LOAD   u32 config length, config JSON, then for each handler script
 *          u32 path length, path, u32 source length, source
 *   READY  "ok", or the load errors, one per line
 *   EVENT  "<id>\t<attempt>\t<flags>\t<kind>\t<message id>\t<status rank>
 *          \t<conversation>\n<event JSON>"; flags is "stale" for a status
 *          older than one already handled
 *   DONE   "<ok|error|timeout|nomem>\t<microseconds>[\tretire]\n<error>";
 *          "retire": the worker exits after this (its state is full)
 * The supervisor has the inbox writer record the outcome.
 * The worker exits when the supervisor closes the socket.  A worker that
 * hangs where no hook reaches is killed by the supervisor; that is why
 * handlers run in their own process.
 */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <lua.h>

#include "buf.h"
#include "client.h"
#include "config.h"
#include "ipc.h"
#include "lb.h"
#include "lb_ctx.h"
#include "lhost.h"
#include "log.h"

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

enum { F_ID, F_ATTEMPT, F_FLAGS, F_KIND, F_MSGID, F_RANK, F_CONV, NFIELDS };

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
	if (h->mem_limit == 0 || h->mem_used < h->mem_limit / 10 * 9)
		return 0;
	lua_gc(h->L, LUA_GCCOLLECT);
	return h->mem_used >= h->mem_limit / 10 * 9;
}

/* walua.http's metrics go to the supervisor, which keeps /metrics. */
static void
send_metric(const char *family, const char *labels)
{
	ipc_send(WORKER_FD, IPC_METRIC, family, strlen(family) + 1, labels,
	    strlen(labels));
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

int
worker_main(void)
{
	struct ipc_reader rd = { 0 };
	struct buf	 out = { 0 };
	struct config	*cfg = NULL;
	struct lhost	*h = NULL;
	char		 type, err[16384], *p, *nl, *f[NFIELDS];
	size_t		 len;
	const char	*res;
	int		 rc, retire;
	int64_t		 t0, us;

	pthread_setname_np(pthread_self(), "walua-worker");	/* not "exe" */
	/* the supervisor decides when workers stop; terminal signals go to it */
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	dup2(2, 1);		/* stray stdout from libraries lands in the log */
	/*
	 * A worker busy in C notices its supervisor's death only when it
	 * next reads its socket: with walua killed (kill -9, OOM killer) it
	 * would spin on alone.  The kernel ends it with its parent instead.
	 */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1)
		log_msg(LOG_WARN, "worker: prctl: %s", strerror(errno));
	lb_http_set_metric_hook(send_metric);

	while (ipc_recv(WORKER_FD, &rd, &type, &p, &len) == 0) {
		if (type == IPC_LOAD && h == NULL) {
			buf_reset(&out);
			h = load(p, len, &cfg, &out);
			if (h == NULL) {
				ipc_send(WORKER_FD, IPC_READY, out.data,
				    out.len, NULL, 0);
				break;
			}
			ipc_send(WORKER_FD, IPC_READY, "ok", 2, NULL, 0);
			continue;
		}
		if (type != IPC_EVENT || h == NULL)
			break;
		if ((nl = memchr(p, '\n', len)) == NULL)
			break;
		*nl = '\0';
		if (split(p, f, NFIELDS) == -1)
			break;
		t0 = lb_ctx_now_ns();
		err[0] = '\0';
		h->ctx.ev_msgid = *f[F_MSGID] ? f[F_MSGID] : NULL;
		rc = lhost_handle(h, f[F_ID], *f[F_CONV] ? f[F_CONV] : NULL,
		    atoi(f[F_ATTEMPT]), strcmp(f[F_FLAGS], "stale") == 0, nl + 1,
		    len - (size_t)(nl + 1 - p),
		    cfg->limits.handler_timeout_ms, err, sizeof(err));
		us = (lb_ctx_now_ns() - t0) / 1000;
		res = result_name(rc);
		/*
		 * A state that ran out of memory may keep what filled it
		 * (tables held in upvalues): this worker retires after this
		 * event, and says so, so that no event is handed to it.
		 */
		retire = rc == LHOST_NOMEM || near_cap(h);
		buf_reset(&out);
		buf_printf(&out, "%s\t%lld%s\n%s", res, (long long)us,
		    retire ? "\tretire" : "", rc == LHOST_OK ? "" : err);
		if (out.data == NULL || ipc_send(WORKER_FD, IPC_DONE, out.data,
		    out.len, NULL, 0) == -1)
			break;
		if (retire) {
			log_msg(LOG_WARN, "worker %d: its Lua state is at its "
			    "memory cap; replacing it", (int)getpid());
			break;
		}
	}
	lhost_free(h);
	lb_store_close();
	client_cleanup();
	config_free(cfg);
	ipc_reader_free(&rd);
	buf_free(&out);
	return 0;
}
