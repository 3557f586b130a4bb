/* event.h - decode a webhook body into walua events (HTTP threads). */
#ifndef EVENT_H
#define EVENT_H

#include <stddef.h>

#define EVENT_ID_LEN	26

struct event {
	char		 id[EVENT_ID_LEN + 1];
	char		*kind;			/* owned */
	char		*conversation;		/* owned; NULL: no ordering */
	char		*dedup;			/* owned: the dedup keys, one a line */
	const char	*key, *key2;		/* the inbox's split of dedup */
	char		*message_id;		/* owned, or NULL */
	char		*status;		/* owned: a status event's status */
	char		*body;			/* owned: the event, packed (pack.h) */
	size_t		 bodylen;
	long long	 code;			/* provider error code, or 0 */
	long long	 seq;			/* its inbox row (SQLite), or 0 */
	/* the status rank already handled for message_id, read by the
	 * inbox writer in its commit (-1: not read), and the ranks cache
	 * epoch then (see inbox_handled_rank) */
	int		 prior_rank;
	int		 prior_epoch;
};

/* The delivery headers the normalizer looks at (NULL: absent). */
struct event_headers {
	const char	*event;		/* X-Webhook-Event (Kapso) */
	const char	*batch;		/* X-Webhook-Batch */
	const char	*version;	/* X-Webhook-Payload-Version */
	const char	*idempotency;	/* X-Idempotency-Key */
};

struct event_batch {
	struct event	*ev;
	int		 n;
};

int	event_decode(const char *provider, const char *endpoint,
	    const struct event_headers *, const char *body, size_t len,
	    struct event_batch *out, char *err, size_t errlen);
/* 1 (the default): Meta envelopes in the usual shape are read in C
 * (envelope.c); 0: normalize.lua reads every body.  Tests run both. */
extern int	event_envelope_in_c;

void	event_free(struct event *);
void	event_batch_free(struct event_batch *);
void	event_new_id(char out[EVENT_ID_LEN + 1]);
void	event_shutdown(void);
int	event_decode_params(const char *body, size_t len, char **keys,
	    char **values, int max, int *n, char *err, size_t errlen);

#endif
