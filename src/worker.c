/*
 * worker.c - the handler worker process: one sandboxed Lua state, fed one
 * event at a time by the supervisor over fd 3.
 *
 * Protocol (ipc.h frames):
 *   LOAD   u32 config length, config JSON, then for each handler script
 *          u32 path length, path, u32 source length, source
 *   READY  "ok", or the load errors, one per line
 *   EVENT  "<id>\t<attempt>\t<flags>\t<conversation>\n<event JSON>";
 *          flags is "stale" for a status older than one already handled
 *   DONE   "<ok|error|timeout|nomem>\t<microseconds>\n<error message>"
 * The worker exits when the supervisor closes the socket.  A worker that
 * hangs where no hook reaches is killed by the supervisor; that is why
 * handlers run in their own process.
 */
#include "worker.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "ipc.h"
#include "lb.h"
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
	lb_store_setup(cfg->database, cfg->durability);
	if ((h = lhost_new((size_t)cfg->limits.handler_memory_mb << 20, err,
	    sizeof(err))) == NULL) {
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
		if (lhost_load(h, pathbuf, src, sl, err, sizeof(err)) != 0) {
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
	struct buf	 in = { 0 }, out = { 0 };
	struct config	*cfg = NULL;
	struct lhost	*h = NULL;
	char		 type, err[16384], *nl, *tab1, *tab2, *tab3;
	int		 rc;
	int64_t		 t0;

	/* the supervisor decides when workers stop; terminal signals go to it */
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	dup2(2, 1);		/* stray stdout from libraries lands in the log */

	while (ipc_recv(WORKER_FD, &type, &in) == 0) {
		if (type == IPC_LOAD && h == NULL) {
			buf_reset(&out);
			h = load(in.data, in.len, &cfg, &out);
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
		/* "<id>\t<attempt>\t<flags>\t<conversation>\n<json>" */
		if ((nl = memchr(in.data, '\n', in.len)) == NULL)
			break;
		*nl = '\0';
		if ((tab1 = strchr(in.data, '\t')) == NULL ||
		    (tab2 = strchr(tab1 + 1, '\t')) == NULL ||
		    (tab3 = strchr(tab2 + 1, '\t')) == NULL)
			break;
		*tab1 = *tab2 = *tab3 = '\0';
		t0 = lhost_now_ns();
		err[0] = '\0';
		rc = lhost_handle(h, in.data, tab3[1] ? tab3 + 1 : NULL,
		    atoi(tab1 + 1), strcmp(tab2 + 1, "stale") == 0, nl + 1,
		    in.len - (size_t)(nl + 1 - in.data),
		    cfg->limits.handler_timeout_ms, err, sizeof(err));
		buf_reset(&out);
		buf_printf(&out, "%s\t%lld\n%s", result_name(rc),
		    (long long)((lhost_now_ns() - t0) / 1000),
		    rc == LHOST_OK ? "" : err);
		if (out.data == NULL || ipc_send(WORKER_FD, IPC_DONE, out.data,
		    out.len, NULL, 0) == -1)
			break;
	}
	lhost_free(h);
	lb_store_close();
	config_free(cfg);
	buf_free(&in);
	buf_free(&out);
	return 0;
}
