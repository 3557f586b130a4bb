/*
 * httpd.c - the HTTP side: libmicrohttpd on walua's HTTP threads
 * (mhdloop.c), routing, body limits, framing checks, authentication, and
 * the acknowledgement.
 *
 * A POST to an endpoint is read into a capped buffer, authenticated,
 * decoded into events (event.c) and queued; only then is it answered 200.
 * No user Lua ever runs on these threads.  Each request holds a reference
 * to the configuration that was current when it started, so a reload
 * never changes the rules under a request in flight.
 *
 * libmicrohttpd 0.9.75 lets ambiguous framing through (two Content-Length
 * headers, or Content-Length with Transfer-Encoding); such requests are
 * refused with 400 before their body is read.
 *
 * A delivery waits for its commit without an answer, its handler called
 * again on each turn of its HTTP thread (mhdloop.c says why it is not
 * suspended); the inbox writer wakes the thread when the commit is over.
 * See "Deliveries waiting for their commit" below.
 *
 * Connections of the public listener are followed by guard.c from
 * libmicrohttpd's connection notifications: it bounds the time a request
 * head may take, enforces the per-address limit and makes room when
 * connections run short, never touching one whose head is complete.
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "mhd.h"

#include "auth.h"
#include "buf.h"
#include "config.h"
#include "console.h"
#include "event.h"
#include "guard.h"
#include "inbox.h"
#include "ipc.h"
#include "listener.h"
#include "mhdloop.h"
#include "log.h"
#include "oauth.h"
#include "metrics.h"
#include "pool.h"
#include "queue.h"
#include "upgrade.h"

enum { R_ENDPOINT, R_OAUTH, R_HEALTH, R_METRICS, R_CONSOLE, R_NOTFOUND };

/* Where a POST to an endpoint is on its way to the inbox (under wait_mu). */
enum {
	D_NONE,			/* not handed to the inbox */
	D_WAITING,		/* unanswered, in the writer's hands */
	D_COMMITTED,		/* the writer is done: ticket.rc and counts */
	D_STOPPING		/* refused or given up on by a stop: 503 */
};

struct req {
	struct config		*cfg;		/* one reference */
	const struct endpoint	*ep;		/* in cfg */
	int			 route;
	struct buf		 body;
	size_t			 received;	/* including what was dropped */
	int			 too_large;
	int64_t			 started_ms;	/* headers in, body to come */
	void			*console;	/* R_CONSOLE: console.c's */
	/* a delivery waiting for its commit */
	struct mhdloop_thread	*loop;		/* its connection's: woken */
	int			 held;		/* counted in loop's holds */
	struct event_batch	 batch;
	struct inbox_ticket	 ticket;
	/* under wait_mu */
	int			 state;		/* D_* */
	int			 refs;		/* the connection's, the writer's */
	int			 owed;		/* counted in `owed` */
	struct req		*wnext, **wprevp;	/* on `waiting` */
};

static struct mhdloop	*daemon_;		/* listen: the webhooks */
static struct mhdloop	*admin_;		/* admin_listen, or NULL */
static int		 listen_fd = -1, admin_fd = -1;	/* their sockets */

/*
 * Deliveries waiting for their commit.  A waiting request has two
 * references, its connection's (dropped when libmicrohttpd completes the
 * request) and the writer's (dropped in end_wait(), after its commit or
 * its turn's refusal); the last one frees it, so the writer never writes
 * into a freed request.  A request waits from its handler on, though it
 * reaches the writer only at the end of its HTTP thread's turn
 * (submit_turn).  Every wake happens outside wait_mu, but is announced
 * under it: `waking` counts the wakes under way (wait_cv tells when
 * none is left), `owed` the requests whose wait is over and which are not
 * completed yet.  httpd_stop() waits for the commits, then sets `closing`
 * and answers what still waits 503 itself: such a request is D_STOPPING,
 * and the writer, when it finishes, only drops its reference.
 * libmicrohttpd is stopped with no wake under way.
 */
static pthread_mutex_t	 wait_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	 wait_cv = PTHREAD_COND_INITIALIZER;
static struct req	*waiting;
static int		 nwaiting;
static int		 waking;
static int		 owed;
static int		 closing;

/* This HTTP thread's deliveries of its current turn, not submitted yet. */
static __thread struct inbox_ticket *turn, *turn_last;

static void	submit_turn(void);
static void	end_wait(struct req *, int);

#define DRAIN_MS	2000	/* a stop waits this for other requests */
#define FRESH_MS	100	/* ... and this for a new one to speak */
#define ANSWER_MS	1000	/* and this for its last answers to go out */

/* Free r with what it owns (its last reference is gone). */
static void
req_free(struct req *r)
{
	config_put(r->cfg);
	console_end(&r->console);
	buf_free(&r->body);
	event_batch_free(&r->batch);
	free(r);
}

/* Put r on the waiting list, or take it off.  Under wait_mu. */
static void
wait_link(struct req *r)
{
	if ((r->wnext = waiting) != NULL)
		waiting->wprevp = &r->wnext;
	waiting = r;
	r->wprevp = &waiting;
	nwaiting++;
}

static void
wait_unlink(struct req *r)
{
	if (r->wnext != NULL)
		r->wnext->wprevp = r->wprevp;
	*r->wprevp = r->wnext;
	r->wnext = NULL;
	r->wprevp = NULL;
	nwaiting--;
}

/* The endpoint label of metrics: a configured path or a fixed word. */
static const char *
label_of(const struct req *r)
{
	switch (r->route) {
	case R_ENDPOINT:	return r->ep->path;
	case R_OAUTH:		return r->cfg->oauth2_path;
	case R_HEALTH:		return "/healthz";
	case R_METRICS:		return "/metrics";
	case R_CONSOLE:		return "console";
	default:		return "unmatched";
	}
}

static void
remote_addr(struct MHD_Connection *c, char *out, size_t len)
{
	const union MHD_ConnectionInfo	*ci;
	const struct sockaddr		*sa;

	snprintf(out, len, "?");
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci == NULL || (sa = ci->client_addr) == NULL)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)
		    sa)->sin_addr, out, (socklen_t)len);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)
		    (const void *)sa)->sin6_addr, out, (socklen_t)len);
}

/*
 * Count an answer in walua_http_requests_total.  Nearly every answer of
 * an HTTP thread has the labels of its last one: its series is looked up
 * again only when they change, not formatted and found for every request.
 */
static void
count_answer(const struct req *r, unsigned int status)
{
	static __thread struct metric	*m;
	static __thread char		 path[256];
	static __thread unsigned int	 last_status;
	const char			*label = label_of(r);
	char				 labels[512];
	size_t				 n;

	if (m == NULL || status != last_status || strcmp(label, path) != 0) {
		snprintf(labels, sizeof(labels), "endpoint=\"%s\",code=\"%u\"",
		    label, status);
		m = metrics_series("walua_http_requests_total", labels);
		/* a path too long to keep is looked up every time */
		if ((n = strlen(label)) < sizeof(path))
			memcpy(path, label, n + 1);
		else
			path[0] = '\0';
		last_status = status;
	}
	metrics_add(m, 1);
}

/*
 * Queue a response: status, body (copied), and header pairs from hdrs
 * (name, value, ..., NULL).
 */
static enum MHD_Result
respond_h(struct MHD_Connection *c, struct req *r, unsigned int status,
    const char *type, const char *body, size_t len, const char **hdrs)
{
	struct MHD_Response	*resp;
	enum MHD_Result		 ret;
	int			 i;

	resp = MHD_create_response_from_buffer(len, (void *)(uintptr_t)body,
	    MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	for (i = 0; hdrs != NULL && hdrs[i] != NULL; i += 2)
		MHD_add_response_header(resp, hdrs[i], hdrs[i + 1]);
	ret = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	count_answer(r, status);
	return ret;
}

/* respond_h with the header pairs as arguments, ended by NULL. */
static enum MHD_Result
respond(struct MHD_Connection *c, struct req *r, unsigned int status,
    const char *type, const char *body, size_t len, ...)
{
	const char	*hdrs[9];
	va_list		 ap;
	int		 n = 0;

	va_start(ap, len);
	while (n < 8 && (hdrs[n] = va_arg(ap, const char *)) != NULL) {
		hdrs[n + 1] = va_arg(ap, const char *);
		n += 2;
	}
	va_end(ap);
	hdrs[n] = NULL;
	return respond_h(c, r, status, type, body, len, hdrs);
}

/* A JSON error answer {"ok":false,"error":msg}, logged for the operator. */
static enum MHD_Result
refuse(struct MHD_Connection *c, struct req *r, unsigned int status,
    const char *msg, const char *hk, const char *hv)
{
	struct buf	 b = { 0 };
	char		 st[8], remote[64];
	enum MHD_Result	 ret;

	buf_puts(&b, "{\"ok\":false,\"error\":");
	buf_json_string(&b, msg, strlen(msg));
	buf_puts(&b, "}");
	snprintf(st, sizeof(st), "%u", status);
	remote_addr(c, remote, sizeof(remote));
	log_kv(status >= 500 ? LOG_ERROR : LOG_WARN, "request refused",
	    "endpoint", label_of(r), "#status", st, "reason", msg, "remote",
	    remote, NULL);
	if (b.data == NULL)
		return MHD_NO;
	ret = respond(c, r, status, "application/json", b.data, b.len, hk, hv,
	    NULL);
	buf_free(&b);
	return ret;
}

struct framing {
	int	 content_length;
	int	 transfer_encoding;
};

static enum MHD_Result
count_headers(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
	struct framing *f = cls;

	(void)kind;
	(void)value;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
		f->content_length++;
	else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0)
		f->transfer_encoding++;
	return MHD_YES;
}

/* The save-time probe: an empty body, or `{}` with white space around. */
static int
is_probe(const struct buf *b)
{
	size_t	i;
	int	stage = 0;		/* 0: before {, 1: after {, 2: after } */

	for (i = 0; i < b->len; i++) {
		char ch = b->data[i];

		if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n')
			continue;
		if (ch == '{' && stage == 0)
			stage = 1;
		else if (ch == '}' && stage == 1)
			stage = 2;
		else
			return 0;
	}
	return stage == 0 || stage == 2;
}

/*
 * The usual answers to a delivery, made once (libmicrohttpd queues one
 * response on any number of connections): most deliveries then answer
 * without an allocation.  Made by httpd_start, freed by httpd_stop.
 */
#define OK_KEPT	4		/* events and duplicates 0..3 */

static struct MHD_Response	*ok_kept[OK_KEPT][OK_KEPT];

static int
ok_body(char *body, size_t size, int n, int dups)
{
	return snprintf(body, size, "{\"ok\":true,\"events\":%d,"
	    "\"duplicates\":%d}", n, dups);
}

static void
ok_kept_make(void)
{
	char	body[96];
	int	n, d, len;

	for (n = 0; n < OK_KEPT; n++)
		for (d = 0; d < OK_KEPT; d++) {
			len = ok_body(body, sizeof(body), n, d);
			ok_kept[n][d] = MHD_create_response_from_buffer(
			    (size_t)len, body, MHD_RESPMEM_MUST_COPY);
			if (ok_kept[n][d] != NULL &&
			    MHD_add_response_header(ok_kept[n][d],
			    MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") !=
			    MHD_YES) {
				MHD_destroy_response(ok_kept[n][d]);
				ok_kept[n][d] = NULL;	/* made per answer */
			}
		}
}

static void
ok_kept_free(void)
{
	int	n, d;

	for (n = 0; n < OK_KEPT; n++)
		for (d = 0; d < OK_KEPT; d++) {
			if (ok_kept[n][d] != NULL)
				MHD_destroy_response(ok_kept[n][d]);
			ok_kept[n][d] = NULL;
		}
}

static enum MHD_Result
answer_events(struct MHD_Connection *c, struct req *r, int n, int dups)
{
	enum MHD_Result	ret;
	char		body[96];
	int		len;

	if (n >= 0 && n < OK_KEPT && dups >= 0 && dups < OK_KEPT &&
	    ok_kept[n][dups] != NULL) {
		ret = MHD_queue_response(c, MHD_HTTP_OK, ok_kept[n][dups]);
		count_answer(r, MHD_HTTP_OK);
		return ret;
	}
	len = ok_body(body, sizeof(body), n, dups);
	return respond(c, r, MHD_HTTP_OK, "application/json", body,
	    (size_t)len, NULL);
}

static void	committed(struct inbox_ticket *);

static const char *
header(struct MHD_Connection *c, const char *name)
{
	return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* For the sender: what was wrong, without echoing any secret. */
static const char *
reason_text(const char *reason)
{
	if (strcmp(reason, "missing") == 0)
		return "no credentials (Authorization or signature header)";
	if (strcmp(reason, "scheme") == 0)
		return "expected a Bearer token";
	if (strcmp(reason, "token") == 0)
		return "wrong bearer token";
	if (strcmp(reason, "invalid_token") == 0)
		return "unknown or expired access token";
	if (strcmp(reason, "malformed") == 0)
		return "malformed signature header";
	return "signature does not match the body";
}

/*
 * Authenticate a POST to r's endpoint by its auth type, on the raw body.
 * Returns 1, 0 (with *reason) or -1 (cannot check now).
 */
static int
authenticate(struct MHD_Connection *c, struct req *r, const char **reason)
{
	const struct endpoint	*ep = r->ep;
	const char		*body = r->body.data ? r->body.data : "";
	const char		*sig;

	switch (ep->auth) {
	case AUTH_BEARER:
		return auth_bearer(header(c, MHD_HTTP_HEADER_AUTHORIZATION),
		    ep->token, &ep->token_digest, reason);
	case AUTH_OAUTH2:
		return oauth_check(r->cfg, header(c,
		    MHD_HTTP_HEADER_AUTHORIZATION), reason);
	case AUTH_KAPSO:
		/* Kapso's own signature; a raw Meta forward may carry Meta's */
		if ((sig = header(c, "X-Webhook-Signature")) != NULL)
			return auth_signature(sig, 0, ep->secret, body,
			    r->body.len, reason);
		return auth_signature(header(c, "X-Hub-Signature-256"), 1,
		    ep->secret, body, r->body.len, reason);
	case AUTH_META:
		return auth_signature(header(c, "X-Hub-Signature-256"), 1,
		    ep->app_secret, body, r->body.len, reason);
	}
	*reason = "missing";
	return 0;
}

/*
 * Whether every event of b fits the frame that hands it to a handler
 * (re-encoded, an event can be many times its part of the body).
 */
static int
fits_a_frame(const struct event_batch *b)
{
	const struct event	*e;
	int			 i;

	for (i = 0; i < b->n; i++) {
		e = &b->ev[i];
		if (e->bodylen + strlen(e->kind) + (e->message_id ?
		    strlen(e->message_id) : 0) + (e->conversation ?
		    strlen(e->conversation) : 0) + IPC_EVENT_SLACK >
		    IPC_MAX_FRAME)
			return 0;
	}
	return 1;
}

/* A POST to an endpoint, body complete: authenticate, decode, queue. */
static enum MHD_Result
deliver(struct MHD_Connection *c, struct req *r)
{
	const struct endpoint	*ep = r->ep;
	struct event_batch	 batch;
	struct event_headers	 hdr;
	const char		*reason = NULL;
	char			 err[512], labels[512];
	int			 rc;

	if (r->too_large)
		return refuse(c, r, MHD_HTTP_CONTENT_TOO_LARGE,
		    "body larger than limits.max_body", NULL, NULL);
	if (is_probe(&r->body))
		return respond(c, r, MHD_HTTP_OK, "application/json",
		    "{\"ok\":true,\"events\":0}", 22, NULL);
	if ((rc = authenticate(c, r, &reason)) != 1) {
		if (rc == -1)
			return refuse(c, r, MHD_HTTP_SERVICE_UNAVAILABLE,
			    "cannot check the token now: retry later",
			    MHD_HTTP_HEADER_RETRY_AFTER, "2");
		snprintf(labels, sizeof(labels),
		    "endpoint=\"%s\",reason=\"%s\"", ep->path, reason);
		metrics_inc("walua_auth_failures_total", labels, 1);
		snprintf(err, sizeof(err), "unauthorized: %s", reason_text(reason));
		return refuse(c, r, MHD_HTTP_UNAUTHORIZED, err,
		    MHD_HTTP_HEADER_WWW_AUTHENTICATE, ep->auth == AUTH_OAUTH2 ?
		    "Bearer error=\"invalid_token\"" : ep->auth == AUTH_BEARER ?
		    "Bearer realm=\"walua\"" : "Signature");
	}
	hdr.event = header(c, "X-Webhook-Event");
	hdr.batch = header(c, "X-Webhook-Batch");
	hdr.version = header(c, "X-Webhook-Payload-Version");
	hdr.idempotency = header(c, "X-Idempotency-Key");
	rc = event_decode(ep->provider_name, ep->path, &hdr, r->body.data ?
	    r->body.data : "", r->body.len, &batch, err, sizeof(err));
	if (rc == -1)
		return refuse(c, r, MHD_HTTP_BAD_REQUEST, err, NULL, NULL);
	if (rc != 0)
		return refuse(c, r, MHD_HTTP_SERVICE_UNAVAILABLE, err,
		    MHD_HTTP_HEADER_RETRY_AFTER, "5");
	if (!fits_a_frame(&batch)) {
		event_batch_free(&batch);
		return refuse(c, r, MHD_HTTP_CONTENT_TOO_LARGE, "an event of "
		    "this body is too large to hand to a handler", NULL, NULL);
	}
	/*
	 * Wait for the commit without holding this HTTP thread: the
	 * handler answers nothing until the inbox writer is done (the next
	 * calls, on_request), so one commit serves every request that
	 * arrived meanwhile.
	 */
	r->batch = batch;
	r->loop = mhdloop_current();
	r->ticket.batch = &r->batch;
	r->ticket.provider = ep->provider_name;
	r->ticket.endpoint = ep->path;
	r->ticket.cfg = r->cfg;
	r->ticket.done = committed;
	r->ticket.arg = r;
	pthread_mutex_lock(&wait_mu);
	if (!closing) {
		r->held = 1;
		mhdloop_hold(r->loop);
		r->state = D_WAITING;
		r->refs++;			/* the writer's */
		wait_link(r);
		pthread_mutex_unlock(&wait_mu);
		/* to the writer at the end of this turn, with the others */
		r->ticket.next = NULL;
		if (turn_last != NULL)
			turn_last->next = &r->ticket;
		else
			turn = &r->ticket;
		turn_last = &r->ticket;
		return MHD_YES;
	}
	/* stopping: the inbox takes nothing more (answered next turn) */
	r->state = D_STOPPING;
	r->owed = 1;
	owed++;
	pthread_mutex_unlock(&wait_mu);
	mhdloop_answered();
	return MHD_YES;
}

/*
 * Hand what this HTTP thread's turn took in to the inbox writer, in one
 * group (a writer woken by each request would commit them a few at a
 * time).  Called by mhdloop.c once the turn is over.  When the inbox is
 * closing, each request still waiting is answered 503 as at a stop.
 */
static void
submit_turn(void)
{
	struct inbox_ticket	*t = turn, *next;

	if (t == NULL)
		return;
	turn = turn_last = NULL;
	if (inbox_submit(t) == 0)
		return;
	for (; t != NULL; t = next) {
		next = t->next;		/* end_wait may free t's request */
		end_wait(t->arg, D_STOPPING);
	}
}

/*
 * r's wait is over (state: D_COMMITTED, or D_STOPPING when the inbox
 * refused its turn); wake its HTTP thread to answer it, unless a stop
 * already answered it.  Drops the writer's reference.
 */
static void
end_wait(struct req *r, int state)
{
	struct mhdloop_thread	*loop = r->loop;
	int			 last, wake = 0;

	pthread_mutex_lock(&wait_mu);
	if (r->state == D_WAITING) {
		wait_unlink(r);
		r->state = state;
		r->owed = 1;
		owed++;
		waking++;
		wake = 1;
	}
	/* never last when waking: the connection's reference is there */
	last = --r->refs == 0;
	pthread_mutex_unlock(&wait_mu);
	if (wake) {
		mhdloop_wake(loop);
		pthread_mutex_lock(&wait_mu);
		if (--waking == 0)
			pthread_cond_broadcast(&wait_cv);
		pthread_mutex_unlock(&wait_mu);
	}
	if (last)
		req_free(r);
}

/* From the inbox writer thread: t's commit is over. */
static void
committed(struct inbox_ticket *t)
{
	end_wait(t->arg, D_COMMITTED);
}

/* The delivery's commit is over, or walua is stopping: answer it. */
static enum MHD_Result
acknowledge(struct MHD_Connection *c, struct req *r, int state)
{
	if (r->held) {
		r->held = 0;
		mhdloop_release(r->loop);
	}
	mhdloop_answered();		/* written on the next turn */
	if (state == D_STOPPING)
		return refuse(c, r, MHD_HTTP_SERVICE_UNAVAILABLE,
		    "stopping: retry later", MHD_HTTP_HEADER_RETRY_AFTER, "5");
	event_batch_free(&r->batch);
	if (r->ticket.rc == -1)
		return refuse(c, r, MHD_HTTP_SERVICE_UNAVAILABLE, r->ticket.full ?
		    "inbox full: retry later" : "database unavailable: retry "
		    "later", MHD_HTTP_HEADER_RETRY_AFTER, r->ticket.full ? "5" :
		    "2");
	return answer_events(c, r, r->ticket.nnew, r->ticket.ndup);
}

/* Meta's subscription handshake: echo hub.challenge for our token. */
static enum MHD_Result
handshake(struct MHD_Connection *c, struct req *r)
{
	const char	*mode, *tok, *challenge;

	mode = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
	    "hub.mode");
	tok = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
	    "hub.verify_token");
	challenge = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
	    "hub.challenge");
	if (mode == NULL || strcmp(mode, "subscribe") != 0 || tok == NULL ||
	    challenge == NULL || !auth_equal(tok, strlen(tok),
	    r->ep->verify_token, strlen(r->ep->verify_token)))
		return refuse(c, r, MHD_HTTP_FORBIDDEN, "verification failed: "
		    "wrong hub.verify_token or missing hub.* parameters", NULL,
		    NULL);
	log_kv(LOG_INFO, "meta subscription verified", "endpoint",
	    r->ep->path, NULL);
	return respond(c, r, MHD_HTTP_OK, "text/plain", challenge,
	    strlen(challenge), NULL);
}

/* The OAuth2 token endpoint (oauth.c does the work). */
static enum MHD_Result
token(struct MHD_Connection *c, struct req *r)
{
	struct oauth_answer	 a;
	enum MHD_Result		 ret;
	const char		*hdrs[9];
	char			 retry[16], st[8], remote[64], labels[256];
	int			 n = 0;

	if (r->too_large)
		return refuse(c, r, MHD_HTTP_CONTENT_TOO_LARGE,
		    "body larger than limits.max_body", NULL, NULL);
	oauth_token(r->cfg, header(c, MHD_HTTP_HEADER_AUTHORIZATION),
	    header(c, MHD_HTTP_HEADER_CONTENT_TYPE), r->body.data ?
	    r->body.data : "", r->body.len, &a);
	if (a.body.data == NULL) {
		buf_free(&a.body);
		return MHD_NO;
	}
	snprintf(retry, sizeof(retry), "%d", a.retry_after);
	if (a.status != 200) {
		snprintf(st, sizeof(st), "%d", a.status);
		remote_addr(c, remote, sizeof(remote));
		log_kv(LOG_WARN, "token request refused", "#status", st,
		    "error", a.reason, "client_id", a.client[0] ? a.client :
		    NULL, "remote", remote, NULL);
		snprintf(labels, sizeof(labels),
		    "endpoint=\"%s\",reason=\"%s\"", r->cfg->oauth2_path,
		    a.reason);
		metrics_inc("walua_auth_failures_total", labels, 1);
	} else
		log_kv(LOG_INFO, "token issued", "client_id", a.client, NULL);
	hdrs[n++] = "Cache-Control";
	hdrs[n++] = "no-store";
	hdrs[n++] = "Pragma";
	hdrs[n++] = "no-cache";
	if (a.retry_after > 0) {
		hdrs[n++] = MHD_HTTP_HEADER_RETRY_AFTER;
		hdrs[n++] = retry;
	}
	if (a.status == 401 && a.basic) {
		hdrs[n++] = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
		hdrs[n++] = "Basic realm=\"walua\"";
	}
	hdrs[n] = NULL;
	ret = respond_h(c, r, (unsigned int)a.status, "application/json",
	    a.body.data, a.body.len, hdrs);
	buf_free(&a.body);
	return ret;
}

static enum MHD_Result
health(struct MHD_Connection *c, struct req *r)
{
	struct queue_stats	st;
	char			body[256];
	int			len, ok;

	queue_stats(&st);
	ok = inbox_healthy();
	len = snprintf(body, sizeof(body), "{\"ok\":%s,\"database\":\"%s\","
	    "\"generation\":%d,\"workers\":%d,\"pending\":%ld,"
	    "\"inflight\":%ld,\"unmarked\":%d,\"dead\":%ld}", ok ? "true" :
	    "false", ok ? "ok" : "unavailable", pool_generation(),
	    pool_workers(), st.waiting + st.retrying, st.inflight,
	    inbox_unmarked(), inbox_dead_count());
	return respond(c, r, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
	    "application/json", body, (size_t)len, NULL);
}

static enum MHD_Result
metrics_page(struct MHD_Connection *c, struct req *r)
{
	struct buf	b = { 0 };
	enum MHD_Result	ret;

	/* count this scrape before rendering, so it sees itself */
	if (metrics_render(&b) == -1 || b.data == NULL) {
		buf_free(&b);
		return refuse(c, r, MHD_HTTP_SERVICE_UNAVAILABLE,
		    "out of memory", NULL, NULL);
	}
	ret = respond(c, r, MHD_HTTP_OK, "text/plain; version=0.0.4", b.data,
	    b.len, NULL);
	buf_free(&b);
	return ret;
}

/* First call: route, check method and framing; 0 to go on reading. */
static int
first_call(struct MHD_Connection *c, struct req *r, const char *url,
    const char *method, enum MHD_Result *ret)
{
	struct framing	 f = { 0, 0 };
	const char	*cl;
	unsigned long long n;
	char		*end;
	int		 is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
	int		 is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
			    strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;

	if ((r->ep = config_endpoint(r->cfg, url)) != NULL)
		r->route = R_ENDPOINT;
	else if (strcmp(url, r->cfg->oauth2_path) == 0)
		r->route = R_OAUTH;
	else if (console_serves(r->cfg, url, 0)) {
		/* no admin listener: the console is here (console.c) */
		r->route = R_CONSOLE;
		if (console_begin(&r->console) == -1) {
			*ret = MHD_NO;
			return 1;
		}
	} else {		/* /healthz and /metrics too: only on admin_listen */
		r->route = R_NOTFOUND;
		*ret = refuse(c, r, MHD_HTTP_NOT_FOUND, "no such path", NULL,
		    NULL);
		return 1;
	}
	if (r->route == R_OAUTH && !is_post) {
		*ret = refuse(c, r, MHD_HTTP_METHOD_NOT_ALLOWED,
		    "method not allowed", MHD_HTTP_HEADER_ALLOW, "POST");
		return 1;
	}
	if (r->route == R_ENDPOINT && !is_post && !is_get) {
		*ret = refuse(c, r, MHD_HTTP_METHOD_NOT_ALLOWED,
		    "method not allowed", MHD_HTTP_HEADER_ALLOW,
		    "POST, GET, HEAD");
		return 1;
	}
	MHD_get_connection_values(c, MHD_HEADER_KIND, count_headers, &f);
	if (f.content_length > 1 || (f.content_length && f.transfer_encoding) ||
	    f.transfer_encoding > 1) {
		*ret = refuse(c, r, MHD_HTTP_BAD_REQUEST, "ambiguous framing: "
		    "repeated Content-Length or Transfer-Encoding, or both",
		    NULL, NULL);
		return 1;
	}
	cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl != NULL) {
		errno = 0;
		n = strtoull(cl, &end, 10);
		if (errno != 0 || end == cl || *end != '\0') {
			*ret = refuse(c, r, MHD_HTTP_BAD_REQUEST,
			    "bad Content-Length", NULL, NULL);
			return 1;
		}
		if (n > r->cfg->limits.max_body) {
			*ret = refuse(c, r, MHD_HTTP_CONTENT_TOO_LARGE,
			    "body larger than limits.max_body", NULL, NULL);
			return 1;
		}
	}
	return 0;
}

/* guard.c's record of connection c (NULL if it has none). */
static struct guard_conn *
guard_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci;

	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci != NULL ? ci->socket_context : NULL;
}

/*
 * libmicrohttpd opened or is closing connection c (on c's thread; when
 * closing, before its socket is closed): guard.c tracks it meanwhile.
 * A connection it cannot track (out of memory) is refused.
 */
static void
on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
    enum MHD_ConnectionNotificationCode toe)
{
	const union MHD_ConnectionInfo	*fd, *addr;

	(void)cls;
	if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
		guard_close(*socket_context);
		*socket_context = NULL;
		return;
	}
	fd = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	addr = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (fd == NULL)
		return;
	*socket_context = guard_open(fd->connect_fd, addr != NULL ?
	    addr->client_addr : NULL);
	if (*socket_context == NULL)
		shutdown(fd->connect_fd, SHUT_RDWR);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **con_cls)
{
	struct req	*r = *con_cls;
	enum MHD_Result	 ret = MHD_YES;
	size_t		 max;
	int		 state;

	(void)cls;
	(void)version;
	if (r == NULL) {
		/* the head is complete: unless guard.c closed it just now */
		if (guard_head(guard_of(c)) == -1)
			return MHD_NO;
		if ((r = calloc(1, sizeof(*r))) == NULL)
			return MHD_NO;
		r->refs = 1;
		*con_cls = r;
		r->started_ms = queue_now_ms();
		if ((r->cfg = config_get()) == NULL)
			return MHD_NO;
		if (first_call(c, r, url, method, &ret))
			return ret;
		return MHD_YES;
	}
	if (r->route == R_CONSOLE)
		return console_request(c, url, method, upload, upload_size,
		    &r->console);
	if (*upload_size > 0) {
		/*
		 * libmicrohttpd's timeout is for idle connections: a body
		 * trickling a byte at a time resets it.  Bound the whole body
		 * (guard.c bounds the head).
		 */
		if (queue_now_ms() - r->started_ms >
		    (int64_t)r->cfg->http_request_timeout_s * 1000) {
			log_kv(LOG_WARN, "request too slow: connection closed",
			    "endpoint", label_of(r), NULL);
			return MHD_NO;
		}
		max = r->cfg->limits.max_body;
		r->received += *upload_size;
		if (!r->too_large && r->body.len + *upload_size <= max) {
			if (buf_append(&r->body, upload, *upload_size) == -1)
				return MHD_NO;
		} else {
			/* keep reading (to answer 413), but not forever */
			r->too_large = 1;
			buf_free(&r->body);
			if (r->received > 2 * max + 65536)
				return MHD_NO;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	switch (r->route) {
	case R_OAUTH:
		return token(c, r);
	case R_ENDPOINT:
		if (strcmp(method, MHD_HTTP_METHOD_POST) == 0) {
			pthread_mutex_lock(&wait_mu);
			state = r->state;
			pthread_mutex_unlock(&wait_mu);
			if (state == D_WAITING)
				return MHD_YES;		/* not yet */
			return state == D_NONE ? deliver(c, r) :
			    acknowledge(c, r, state);
		}
		if (r->ep->auth == AUTH_META)
			return handshake(c, r);
		/* Insider's save-time probe: its form is undocumented */
		return respond(c, r, MHD_HTTP_OK, "application/json",
		    "{\"ok\":true,\"events\":0}", 22, NULL);
	}
	return MHD_NO;
}

/*
 * The admin listener: /healthz and /metrics (GET or HEAD), answered on
 * the first call, and the console (console.c) when configured; nothing
 * else.  Its own thread, so a busy webhook side does not delay a health
 * check.
 */
static enum MHD_Result
on_admin(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **con_cls)
{
	struct req	 r;
	struct config	*cfg;
	int		 console;

	(void)cls;
	(void)version;
	if (*con_cls != NULL)		/* the console's, after its first call */
		return console_request(c, url, method, upload, upload_size,
		    con_cls);
	cfg = config_get();
	console = console_serves(cfg, url, 1);
	config_put(cfg);
	if (console)
		return console_begin(con_cls) == 0 ? MHD_YES : MHD_NO;
	memset(&r, 0, sizeof(r));
	if (strcmp(url, "/healthz") == 0)
		r.route = R_HEALTH;
	else if (strcmp(url, "/metrics") == 0)
		r.route = R_METRICS;
	else {
		r.route = R_NOTFOUND;
		return refuse(c, &r, MHD_HTTP_NOT_FOUND, "no such path", NULL,
		    NULL);
	}
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return refuse(c, &r, MHD_HTTP_METHOD_NOT_ALLOWED,
		    "method not allowed", MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	return r.route == R_HEALTH ? health(c, &r) : metrics_page(c, &r);
}

/* An admin request is over: free the console's part, if any. */
static void
on_admin_completed(void *cls, struct MHD_Connection *c, void **con_cls,
    enum MHD_RequestTerminationCode code)
{
	(void)cls;
	(void)c;
	(void)code;
	console_end(con_cls);
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
    enum MHD_RequestTerminationCode code)
{
	struct req	*r = *con_cls;
	int		 last;

	(void)cls;
	if (code == MHD_REQUEST_TERMINATED_COMPLETED_OK)
		guard_idle(guard_of(c));	/* kept alive, or closing */
	if (r == NULL)
		return;
	*con_cls = NULL;
	if (r->held) {
		/* closed while waiting (the client, a timeout, the stop) */
		r->held = 0;
		mhdloop_release(r->loop);
	}
	pthread_mutex_lock(&wait_mu);
	if (r->state == D_WAITING) {
		/* the client left: the writer must not wake for it */
		wait_unlink(r);
		r->state = D_STOPPING;
	}
	if (r->owed)
		owed--;
	last = --r->refs == 0;
	pthread_mutex_unlock(&wait_mu);
	if (last)
		req_free(r);
}

static void	mhd_log(void *, const char *, va_list)
		    __attribute__((format(printf, 2, 0)));

#define MHD_LOG_PER_S	10	/* libmicrohttpd's lines logged a second */

/*
 * libmicrohttpd's messages, at most MHD_LOG_PER_S a second: a client can
 * cause one per connection ("closed by remote side", "connection
 * limit"), and the log must not become the attack.  The count of those
 * left out is logged with the next one that is not.
 */
static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	static pthread_mutex_t	 mu = PTHREAD_MUTEX_INITIALIZER;
	static int64_t		 window_ms = -1000;
	static int		 lines;
	static long		 dropped;
	int64_t			 now = queue_now_ms();
	long			 missed = 0;
	char			 msg[1024], count[24];
	size_t			 n;
	int			 keep;

	(void)cls;
	pthread_mutex_lock(&mu);
	if (now - window_ms >= 1000) {
		window_ms = now;
		lines = 0;
	}
	if ((keep = lines < MHD_LOG_PER_S)) {
		lines++;
		missed = dropped;
		dropped = 0;
	} else
		dropped++;
	pthread_mutex_unlock(&mu);
	if (!keep)
		return;
	if (missed > 0) {
		snprintf(count, sizeof(count), "%ld", missed);
		log_kv(LOG_WARN, "http: messages left out (too many a second)",
		    "#count", count, NULL);
	}
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	log_kv(LOG_WARN, "http", "detail", msg, NULL);
}

/*
 * http.threads 0: one thread per CPU walua may run on, at most 4 (more
 * only wait for the one inbox writer).  Pinned to one CPU, one thread
 * leaves the handlers their share of it.
 */
static unsigned int
http_threads(const struct config *cfg)
{
	cpu_set_t	set;
	int		n;

	if (cfg->http_threads > 0)
		return (unsigned int)cfg->http_threads;
	if (sched_getaffinity(0, sizeof(set), &set) == -1)
		return 2;
	n = CPU_COUNT(&set);
	return (unsigned int)(n < 1 ? 1 : n > 4 ? 4 : n);
}

#define ADMIN_CONNS	64

/* The admin listener: one thread, a few connections, no suspensions. */
static int
admin_start(const struct config *cfg, char *err, size_t errlen)
{
	struct MHD_OptionItem	opts[] = {
		{ MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL },
		{ MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_admin_completed,
		    NULL },
		{ MHD_OPTION_CONNECTION_TIMEOUT, cfg->http_timeout_s, NULL },
		{ MHD_OPTION_END, 0, NULL }
	};
	char			why[256];

	/* not shared: listen's port is refused here, not split with it */
	if ((admin_fd = listener_open("admin_listen", cfg->admin_listen,
	    cfg->admin_host, cfg->admin_port, upgrade_listen_fd(1), 0,
	    why, sizeof(why))) == -1) {
		snprintf(err, errlen, "%s: set another, or false for none",
		    why);
		return -1;
	}
	if ((admin_ = mhdloop_start("http-admin", 1, admin_fd,
	    MHD_USE_EPOLL | MHD_USE_ERROR_LOG, ADMIN_CONNS,
	    on_admin, NULL, NULL, opts, err, errlen)) == NULL) {
		close(admin_fd);
		admin_fd = -1;
		return -1;
	}
	return 0;
}

#define FD_SPARE	256	/* descriptors walua needs besides connections */
/*
 * Each connection's memory (its request head, read and write buffers).
 * libmicrohttpd clears what a request used before the next one on the
 * connection, so its default 32 KiB cost a 32 KiB memset per request;
 * 16 KiB still takes a head of 8 KiB and more (webhook heads are under
 * 2 KiB; a bigger one gets 431).
 */
#define HTTP_CONN_MEMORY	(16 * 1024)

/*
 * Each connection is a file descriptor: raise the soft limit of open
 * files to what http.max_connections needs (up to the hard limit), or
 * else lower the number of connections to what the limit allows, so
 * that libmicrohttpd never runs out of descriptors at accept().
 */
static unsigned int
max_connections(const struct config *cfg)
{
	struct rlimit	rl;
	rlim_t		want = (rlim_t)cfg->http_max_connections + FD_SPARE;
	unsigned int	n;
	char		a[24], b[24];

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return (unsigned int)cfg->http_max_connections;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
		rl.rlim_cur = rl.rlim_max != RLIM_INFINITY &&
		    rl.rlim_max < want ? rl.rlim_max : want;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
		return (unsigned int)cfg->http_max_connections;
	n = rl.rlim_cur > 2 * FD_SPARE ? (unsigned int)(rl.rlim_cur -
	    FD_SPARE) : (unsigned int)rl.rlim_cur / 2;
	if (n < 1)
		n = 1;
	snprintf(a, sizeof(a), "%u", n);
	snprintf(b, sizeof(b), "%llu", (unsigned long long)rl.rlim_cur);
	log_kv(LOG_WARN, "http.max_connections lowered to what the limit of "
	    "open files allows (raise ulimit -n)", "#max_connections", a,
	    "#open_files", b, NULL);
	return n;
}

/*
 * Start serving cfg->listen, and cfg->admin_listen when set.  Returns 0,
 * or -1 with the reason in err (and nothing listening).
 */
int
httpd_start(const struct config *cfg, char *err, size_t errlen)
{
	struct guard_limits	 gl;
	struct MHD_OptionItem	 opts[] = {
		{ MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL },
		{ MHD_OPTION_CONNECTION_MEMORY_LIMIT, HTTP_CONN_MEMORY, NULL },
		{ MHD_OPTION_CONNECTION_TIMEOUT, cfg->http_timeout_s, NULL },
		{ MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, NULL },
		{ MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection,
		    NULL },
		{ MHD_OPTION_END, 0, NULL }
	};
	unsigned int		 max = max_connections(cfg);
	int			 kept_s;

	if (mhd_load(err, errlen) == -1)
		return -1;
	ok_kept_make();
	/* a socket systemd or the walua before us listens on, else a new
	 * one (shared: SO_REUSEPORT) */
	if ((listen_fd = listener_open("listen", cfg->listen,
	    cfg->listen_host, cfg->listen_port, upgrade_listen_fd(0), 1, err,
	    errlen)) == -1)
		return -1;
	/* a later head on a kept-alive connection: as long as it may idle */
	kept_s = cfg->http_timeout_s > cfg->http_header_timeout_s ?
	    cfg->http_timeout_s : cfg->http_header_timeout_s;
	gl.head_ms = cfg->http_header_timeout_s * 1000;
	gl.kept_ms = kept_s * 1000;
	gl.max_conns = (int)max;
	gl.per_ip = cfg->http_per_ip;	/* guard.c's, not libmicrohttpd's */
	if (guard_start(&gl, err, errlen) == -1)
		goto fail;
	if ((daemon_ = mhdloop_start("http", http_threads(cfg), listen_fd,
	    MHD_USE_EPOLL | MHD_USE_ERROR_LOG, max,
	    on_request, NULL, submit_turn, opts, err, errlen)) == NULL) {
		guard_stop();
		goto fail;
	}
	if (cfg->admin_listen != NULL && admin_start(cfg, err, errlen) == -1) {
		mhdloop_stop(daemon_);
		daemon_ = NULL;
		guard_stop();
		goto fail;
	}
	return 0;
fail:
	close(listen_fd);
	listen_fd = -1;
	ok_kept_free();
	return -1;
}

/*
 * The listening socket of listen (which 0) or admin_listen (1), for an
 * upgrade to hand over; -1 when there is none.
 */
int
httpd_listen_fd(int which)
{
	return which == 0 ? listen_fd : admin_fd;
}

static void
sleep_ms(long ms)
{
	struct timespec	ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/*
 * Stop accepting, close idle connections (guard_drain: those with no
 * request on its way, and each one once its request is over), let
 * requests in progress finish (DRAIN_MS) and deliveries finish their
 * commit (limits.shutdown_timeout_ms), then stop the HTTP threads.  A
 * delivery still waiting then is answered 503: its commit may still
 * succeed, and a retry of it is then a duplicate.  Called from the
 * supervisor on SIGTERM.
 */
void
httpd_stop(void)
{
	struct config	*cfg;
	struct req	*r;
	int64_t		 now, drain_end, commit_end, fresh_end;
	int		 n, left;
	char		 count[16];

	if (daemon_ == NULL)
		return;
	/* a new binary of an upgrade that shares the socket accepts now */
	mhdloop_quiesce(daemon_);
	close(listen_fd);
	listen_fd = -1;
	/* a connection accepted just before may have its request on its way
	 * (a new binary of an upgrade accepts the next ones): FRESH_MS */
	guard_drain(FRESH_MS);
	now = queue_now_ms();
	fresh_end = now + FRESH_MS;
	drain_end = now + DRAIN_MS;
	cfg = config_get();
	commit_end = now + (cfg != NULL ? cfg->limits.shutdown_timeout_ms : 0);
	config_put(cfg);
	for (;;) {
		pthread_mutex_lock(&wait_mu);
		n = nwaiting;
		pthread_mutex_unlock(&wait_mu);
		now = queue_now_ms();
		if (fresh_end != 0 && now >= fresh_end) {
			guard_drain(0);
			fresh_end = 0;
		}
		if ((guard_count() <= n ||
		    now >= drain_end) && (n == 0 || now >= commit_end))
			break;
		sleep_ms(10);
	}

	/* no more waits; what still waits is ours to answer */
	pthread_mutex_lock(&wait_mu);
	closing = 1;
	for (n = 0; (r = waiting) != NULL; n++) {
		wait_unlink(r);
		r->state = D_STOPPING;	/* its handler answers 503 */
		r->owed = 1;
		owed++;
	}
	while (waking > 0)
		pthread_cond_wait(&wait_cv, &wait_mu);
	pthread_mutex_unlock(&wait_mu);
	if (n > 0) {
		mhdloop_wake_all(daemon_);
		snprintf(count, sizeof(count), "%d", n);
		log_kv(LOG_WARN, "stopping: deliveries still waiting for their "
		    "commit are answered 503", "#deliveries", count, NULL);
	}

	/* let the answers of requests whose wait is over go out (a client may not read) */
	for (n = 0; n < ANSWER_MS / 10; n++) {
		pthread_mutex_lock(&wait_mu);
		left = owed;
		pthread_mutex_unlock(&wait_mu);
		if (left == 0)
			break;
		sleep_ms(10);
	}
	mhdloop_stop(daemon_);
	daemon_ = NULL;
	guard_stop();
	if (admin_ != NULL) {
		/* its socket closed first: it may be a new binary's now */
		mhdloop_quiesce(admin_);
		close(admin_fd);
		admin_fd = -1;
		mhdloop_stop(admin_);
	}
	admin_ = NULL;
	console_free();		/* no request can use it now */
	ok_kept_free();
}
