/*
 * client.c - the outbound HTTP client every binding shares (libcurl).
 *
 * Blocking calls (admin scripts, a script's top level, a handler's own
 * coroutines) share one reused easy handle per process, so connections
 * to the same provider are kept alive between calls; a handler's calls go
 * through fetch.c instead, which uses the same set-up.  Every request has a connect and
 * a total timeout (the caller passes what is left of its budget), a cap
 * on the response size, no redirects, and only http and https.
 */
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLIENT_CONNECT_MS	10000

static CURL	*easy;
static int	 curl_ready;

/*
 * On the first request: a worker whose handlers never call out does not
 * pay for libcurl's TLS set-up (memory, start time).  The processes
 * that use the client are single-threaded, as curl_global_init needs.
 */
int
client_init(void)
{
	if (!curl_ready && curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK)
		curl_ready = 1;
	return curl_ready ? 0 : -1;
}

void
client_cleanup(void)
{
	if (easy != NULL)
		curl_easy_cleanup(easy);
	easy = NULL;
	if (curl_ready)
		curl_global_cleanup();
	curl_ready = 0;
}

/* Append to a capped buffer; 0 (abort the transfer) past the cap. */
static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
	struct client_sink	*s = arg;
	size_t			 len = size * n;

	if (s->b->len + len > s->cap) {
		s->overflow = 1;
		return 0;
	}
	if (buf_append(s->b, p, len) == -1)
		return 0;
	return len;
}

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
	struct client_sink	*s = arg;
	size_t			 len = size * n;

	/* a new status line (after a 100 Continue) starts the headers over */
	if (len > 5 && strncmp(p, "HTTP/", 5) == 0)
		buf_reset(s->b);
	if (s->b->len + len > 65536)
		return 0;
	return buf_append(s->b, p, len) == -1 ? 0 : len;
}

/*
 * Set easy up for req, the answer going to body and headers (reset
 * first), with x holding what must live as long as the transfer.  The
 * one set-up for the blocking client (client_request) and the event
 * loop's (fetch.c).  Returns 0, or -1 with the reason in err.
 */
int
client_prepare(CURL *e, const struct client_req *req, struct buf *body,
    struct buf *headers, struct client_xfer *x, char *err, size_t errlen)
{
	struct curl_slist	*tmp;
	int			 i;

	buf_reset(body);
	buf_reset(headers);
	memset(x, 0, sizeof(*x));
	x->body.b = body;
	x->body.cap = req->max_response;
	x->hdrs.b = headers;
	x->hdrs.cap = 65536;
	curl_easy_reset(e);
	for (i = 0; req->headers != NULL && req->headers[i] != NULL; i++) {
		if ((tmp = curl_slist_append(x->hl, req->headers[i])) == NULL) {
			curl_slist_free_all(x->hl);
			x->hl = NULL;
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		x->hl = tmp;
	}
	/* no "Expect: 100-continue" round trip on larger bodies */
	if ((tmp = curl_slist_append(x->hl, "Expect:")) != NULL)
		x->hl = tmp;
	x->ms = req->timeout_ms > 0 ? req->timeout_ms : 1;
	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	    x->ms < CLIENT_CONNECT_MS ? x->ms : (long)CLIENT_CONNECT_MS);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, x->ms);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->ebuf);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hl);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &x->body);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, &x->hdrs);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "walua");
	if (strcmp(req->method, "HEAD") == 0)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	if (req->body != NULL) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)req->bodylen);
	}
	return 0;
}

/*
 * The outcome of a transfer on e that ended with rc: 0 and the HTTP
 * status, or -1 with the reason in err.  Frees what x held.
 */
int
client_finish(CURL *e, CURLcode rc, struct client_xfer *x, int *status,
    char *err, size_t errlen)
{
	long	code = 0;

	curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(x->hl);
	x->hl = NULL;
	*status = 0;
	if (rc != CURLE_OK) {
		if (x->body.overflow)
			snprintf(err, errlen, "response larger than %zu bytes",
			    x->body.cap);
		else if (rc == CURLE_OPERATION_TIMEDOUT)
			snprintf(err, errlen, "timed out after %ld ms", x->ms);
		else
			snprintf(err, errlen, "%s", x->ebuf[0] ? x->ebuf :
			    curl_easy_strerror(rc));
		return -1;
	}
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
	*status = (int)code;
	return 0;
}

/*
 * Make the request, blocking.  Returns 0 with the answer in resp
 * (whatever its HTTP status), or -1 with the reason in err (no answer:
 * connection, timeout, bad URL, answer too large).  resp's buffers are
 * the caller's to free.
 */
int
client_request(const struct client_req *req, struct client_resp *resp,
    char *err, size_t errlen)
{
	struct client_xfer	x;

	resp->status = 0;
	if (client_init() == -1 || (easy == NULL &&
	    (easy = curl_easy_init()) == NULL)) {
		snprintf(err, errlen, "cannot start the HTTP client");
		return -1;
	}
	if (client_prepare(easy, req, &resp->body, &resp->headers, &x, err,
	    errlen) == -1)
		return -1;
	return client_finish(easy, curl_easy_perform(easy), &x,
	    &resp->status, err, errlen);
}
