/*
 * client.c - the outbound HTTP client every binding shares (libcurl).
 *
 * One reused easy handle per process (a worker handles one event at a
 * time; an admin script is single-threaded), so connections to the same
 * provider are kept alive between calls.  Every request has a connect and
 * a total timeout (the caller passes what is left of its budget), a cap
 * on the response size, no redirects, and only http and https.
 */
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#define CLIENT_CONNECT_MS	10000

static CURL	*easy;
static int	 curl_ready;

/*
 * On the first request: a worker whose handlers never call out does not
 * pay for libcurl's TLS set-up (memory, start time).  The processes
 * that use the client are single-threaded, as curl_global_init needs.
 */
static int
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

struct sink {
	struct buf	*b;
	size_t		 cap;
	int		 overflow;
};

/* Append to a capped buffer; 0 (abort the transfer) past the cap. */
static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
	struct sink	*s = arg;
	size_t		 len = size * n;

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
	struct sink	*s = arg;
	size_t		 len = size * n;

	/* a new status line (after a 100 Continue) starts the headers over */
	if (len > 5 && strncmp(p, "HTTP/", 5) == 0)
		buf_reset(s->b);
	if (s->b->len + len > 65536)
		return 0;
	return buf_append(s->b, p, len) == -1 ? 0 : len;
}

/*
 * Make the request.  Returns 0 with the answer in resp (whatever its HTTP
 * status), or -1 with the reason in err (no answer: connection, timeout,
 * bad URL, answer too large).  resp's buffers are the caller's to free.
 */
int
client_request(const struct client_req *req, struct client_resp *resp,
    char *err, size_t errlen)
{
	struct curl_slist	*hl = NULL, *tmp;
	struct sink		 body = { &resp->body, req->max_response, 0 };
	struct sink		 hdrs = { &resp->headers, 65536, 0 };
	char			 ebuf[CURL_ERROR_SIZE];
	long			 status = 0, ms;
	CURLcode		 rc;
	int			 i;

	resp->status = 0;
	buf_reset(&resp->body);
	buf_reset(&resp->headers);
	if (client_init() == -1 || (easy == NULL &&
	    (easy = curl_easy_init()) == NULL)) {
		snprintf(err, errlen, "cannot start the HTTP client");
		return -1;
	}
	curl_easy_reset(easy);
	for (i = 0; req->headers != NULL && req->headers[i] != NULL; i++) {
		if ((tmp = curl_slist_append(hl, req->headers[i])) == NULL) {
			curl_slist_free_all(hl);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		hl = tmp;
	}
	/* no "Expect: 100-continue" round trip on larger bodies */
	if ((tmp = curl_slist_append(hl, "Expect:")) != NULL)
		hl = tmp;
	ms = req->timeout_ms > 0 ? req->timeout_ms : 1;
	ebuf[0] = '\0';
	curl_easy_setopt(easy, CURLOPT_URL, req->url);
	curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
	    ms < CLIENT_CONNECT_MS ? ms : (long)CLIENT_CONNECT_MS);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, ms);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, ebuf);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &body);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, &hdrs);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "walua");
	if (strcmp(req->method, "HEAD") == 0)
		curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
	if (req->body != NULL) {
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)req->bodylen);
	}
	rc = curl_easy_perform(easy);
	curl_slist_free_all(hl);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
	if (rc != CURLE_OK) {
		if (body.overflow)
			snprintf(err, errlen, "response larger than %zu bytes",
			    req->max_response);
		else if (rc == CURLE_OPERATION_TIMEDOUT)
			snprintf(err, errlen, "timed out after %ld ms", ms);
		else
			snprintf(err, errlen, "%s", ebuf[0] ? ebuf :
			    curl_easy_strerror(rc));
		return -1;
	}
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	resp->status = (int)status;
	return 0;
}
