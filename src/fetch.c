/*
 * fetch.c - outbound HTTP for handlers that must not block their worker:
 * libcurl's multi interface driven by the worker's event loop (evloop.c)
 * through its socket and timer callbacks, so one thread keeps hundreds of
 * transfers in flight and wakes only for those with something to do.
 *
 * Each transfer is set up exactly as a blocking one (client_prepare) and
 * ends the same way (client_finish): the same limits, the same errors.
 * Easy handles are kept for reuse; connections are kept alive by the multi
 * handle's cache across transfers.  One multi per process, used by its
 * only thread.
 */
#include "fetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evloop.h"

#define FETCH_SPARE_EASY	64	/* easy handles kept for reuse */

struct fetch {
	CURL			*easy;
	struct client_xfer	 x;
	fetch_done_fn		*done;
	void			*arg;
	int			 running;	/* added to the multi */
	CURLcode		 rc;
	int64_t			 t0_ms, t1_ms;
};

/* A socket libcurl asked us to watch. */
struct sock {
	struct evloop_fd	 w;
	struct sock		*next;		/* all of them, for cleanup */
	struct sock		*next_free;
};

static CURLM			*multi;
static struct evloop_timer	 curl_timer;
static CURL			*spare[FETCH_SPARE_EASY];
static int			 nspare, inflight;
static struct sock		*socks, *free_socks;

static void	check_done(void);

static void
on_sock(struct evloop_fd *w, unsigned events)
{
	int	mask = 0, running;

	if (w->fd == -1)
		return;		/* removed earlier in this batch */
	if (events & EVLOOP_IN)
		mask |= CURL_CSELECT_IN;
	if (events & EVLOOP_OUT)
		mask |= CURL_CSELECT_OUT;
	if (events & EVLOOP_ERR)
		mask |= CURL_CSELECT_ERR;
	curl_multi_socket_action(multi, w->fd, mask, &running);
	check_done();
}

/* CURLMOPT_SOCKETFUNCTION: watch s for what libcurl wants, or stop. */
static int
sock_cb(CURL *e, curl_socket_t s, int what, void *uarg, void *sockp)
{
	struct sock	*k = sockp;
	unsigned	 ev = 0;

	(void)e;
	(void)uarg;
	if (what == CURL_POLL_REMOVE) {
		if (k != NULL) {
			evloop_unwatch(&k->w);
			/* kept (not freed): an event of this batch may name it */
			k->w.fd = -1;
			k->next_free = free_socks;
			free_socks = k;
			curl_multi_assign(multi, s, NULL);
		}
		return 0;
	}
	if (k == NULL) {
		if ((k = free_socks) != NULL)
			free_socks = k->next_free;
		else {
			if ((k = calloc(1, sizeof(*k))) == NULL)
				return -1;
			k->next = socks;
			socks = k;
		}
		k->w.fd = s;
		k->w.cb = on_sock;
		curl_multi_assign(multi, s, k);
	}
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		ev |= EVLOOP_IN;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		ev |= EVLOOP_OUT;
	return evloop_watch(&k->w, ev);
}

static void
on_timer(struct evloop_timer *t)
{
	int running;

	(void)t;
	curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done();
}

/* CURLMOPT_TIMERFUNCTION: call socket_action(TIMEOUT) in ms (-1: never). */
static int
timer_cb(CURLM *m, long ms, void *uarg)
{
	(void)m;
	(void)uarg;
	if (ms < 0) {
		evloop_timer_stop(&curl_timer);
		return 0;
	}
	return evloop_timer_start(&curl_timer, evloop_now_ms() + ms);
}

static int
fetch_init(void)
{
	if (multi != NULL)
		return 0;
	if (client_init() == -1 || (multi = curl_multi_init()) == NULL)
		return -1;
	curl_timer.index = -1;
	curl_timer.cb = on_timer;
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	return 0;
}

/* Transfers that ended: take them off the multi, tell their owners. */
static void
check_done(void)
{
	struct fetch	*f;
	CURLMsg		*m;
	int		 left;

	while ((m = curl_multi_info_read(multi, &left)) != NULL) {
		if (m->msg != CURLMSG_DONE)
			continue;
		if (curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE,
		    (char **)&f) != CURLE_OK || f == NULL)
			continue;
		f->rc = m->data.result;
		f->t1_ms = evloop_now_ms();
		curl_multi_remove_handle(multi, f->easy);
		f->running = 0;
		inflight--;
		f->done(f, f->arg);
	}
}

/*
 * Start req; the answer goes to body and headers (which must stay put
 * until fetch_free), and done(f, arg) is called from the event loop when
 * the transfer is over.  Returns the transfer, or NULL with the reason in
 * err (done is never called then).
 */
struct fetch *
fetch_start(const struct client_req *req, struct buf *body,
    struct buf *headers, fetch_done_fn *done, void *arg, char *err,
    size_t errlen)
{
	struct fetch	*f;
	CURLMcode	 mc;

	if (fetch_init() == -1) {
		snprintf(err, errlen, "cannot start the HTTP client");
		return NULL;
	}
	if ((f = calloc(1, sizeof(*f))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	f->easy = nspare > 0 ? spare[--nspare] : curl_easy_init();
	if (f->easy == NULL) {
		free(f);
		snprintf(err, errlen, "cannot start the HTTP client");
		return NULL;
	}
	if (client_prepare(f->easy, req, body, headers, &f->x, err,
	    errlen) == -1) {
		curl_easy_cleanup(f->easy);
		free(f);
		return NULL;
	}
	curl_easy_setopt(f->easy, CURLOPT_PRIVATE, f);
	f->done = done;
	f->arg = arg;
	f->t0_ms = evloop_now_ms();
	if ((mc = curl_multi_add_handle(multi, f->easy)) != CURLM_OK) {
		snprintf(err, errlen, "%s", curl_multi_strerror(mc));
		curl_slist_free_all(f->x.hl);
		curl_easy_cleanup(f->easy);
		free(f);
		return NULL;
	}
	f->running = 1;
	inflight++;
	return f;
}

/*
 * The outcome of a finished transfer: 0 and the HTTP status, or -1 with
 * the reason in err.
 */
int
fetch_result(struct fetch *f, int *status, char *err, size_t errlen)
{
	return client_finish(f->easy, f->rc, &f->x, status, err, errlen);
}

/* How long the transfer took, in seconds. */
double
fetch_seconds(const struct fetch *f)
{
	return (double)((f->t1_ms ? f->t1_ms : evloop_now_ms()) - f->t0_ms) /
	    1000;
}

/* Free f, aborting it if it still runs (its done is not called then). */
void
fetch_free(struct fetch *f)
{
	if (f == NULL)
		return;
	if (f->running) {
		curl_multi_remove_handle(multi, f->easy);
		inflight--;
	}
	curl_easy_setopt(f->easy, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(f->x.hl);
	if (nspare < FETCH_SPARE_EASY)
		spare[nspare++] = f->easy;
	else
		curl_easy_cleanup(f->easy);
	free(f);
}

/* Transfers in flight in this process. */
int
fetch_inflight(void)
{
	return inflight;
}

void
fetch_cleanup(void)
{
	struct sock	*k, *next;

	while (nspare > 0)
		curl_easy_cleanup(spare[--nspare]);
	if (multi != NULL)
		curl_multi_cleanup(multi);
	multi = NULL;
	evloop_timer_stop(&curl_timer);
	for (k = socks; k != NULL; k = next) {
		next = k->next;
		free(k);
	}
	socks = free_socks = NULL;
}
