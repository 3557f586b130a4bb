/* fetch.h - outbound HTTP without blocking: libcurl's multi on evloop. */
#ifndef FETCH_H
#define FETCH_H

#include <stddef.h>

#include "buf.h"
#include "client.h"

struct fetch;

/* Called once, from the event loop, when the transfer is over. */
typedef void	fetch_done_fn(struct fetch *, void *arg);

struct fetch	*fetch_start(const struct client_req *, struct buf *body,
		    struct buf *headers, fetch_done_fn *, void *arg,
		    char *err, size_t errlen);
int		 fetch_result(struct fetch *, int *status, char *err,
		    size_t errlen);
double		 fetch_seconds(const struct fetch *);
void		 fetch_free(struct fetch *);
int		 fetch_inflight(void);
void		 fetch_cleanup(void);

#endif
