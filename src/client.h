/* client.h - outbound HTTP (libcurl), one reused handle per process. */
#ifndef CLIENT_H
#define CLIENT_H

#include <stddef.h>

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

void	client_cleanup(void);
int	client_request(const struct client_req *, struct client_resp *,
	    char *err, size_t errlen);

#endif
