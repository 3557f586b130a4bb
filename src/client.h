/* client.h - outbound HTTP (libcurl), one reused handle per process. */
#ifndef CLIENT_H
#define CLIENT_H

#include <stddef.h>

#include <curl/curl.h>

#include "buf.h"

struct client_req {
	const char	*method;
	const char	*url;
	const char	**headers;	/* "Name: value", NULL-terminated */
	const char	*body;		/* NULL: none */
	size_t		 bodylen;
	long		 timeout_ms;	/* total, connect included */
	size_t		 max_response;
};

struct client_resp {
	int		 status;
	struct buf	 headers;	/* raw header lines */
	struct buf	 body;
};

/* What one transfer needs while it runs (client_prepare fills it). */
struct client_sink {
	struct buf	*b;
	size_t		 cap;
	int		 overflow;
};

struct client_xfer {
	struct client_sink	 body, hdrs;
	struct curl_slist	*hl;
	long			 ms;
	char			 ebuf[CURL_ERROR_SIZE];
};

int	client_init(void);
void	client_cleanup(void);
int	client_prepare(CURL *, const struct client_req *, struct buf *body,
	    struct buf *headers, struct client_xfer *, char *err,
	    size_t errlen);
int	client_finish(CURL *, CURLcode, struct client_xfer *, int *status,
	    char *err, size_t errlen);
int	client_request(const struct client_req *, struct client_resp *,
	    char *err, size_t errlen);

#endif
