/* queue.h - events waiting for a handler, one conversation at a time. */
#ifndef QUEUE_H
#define QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"

struct qitem {
	char		 id[EVENT_ID_LEN + 1];
	long long	 seq;		/* its inbox row (SQLite), or 0 */
	char		*kind;
	char		*conv;		/* conversation key, or NULL */
	char		*message_id;	/* or NULL */
	char		*status;	/* a status event's status, or NULL */
	int		 prior_rank;	/* see struct event */
	int		 prior_epoch;
	char		*body;		/* the event, packed (pack.h) */
	size_t		 bodylen;
	int		 attempts;	/* attempts started so far */
	int64_t		 acked_ms;	/* when it was acknowledged */
	int64_t		 due_ms;	/* retry: not before */
	char		*last_error;
	/* private */
	struct qconv	*c;
	struct qitem	*next, *all_prev, *all_next, *idnext;
};

struct queue_stats {
	long		 waiting;	/* ready or blocked behind its conversation */
	long		 retrying;	/* failed, waiting for their retry time */
	long		 inflight;
	long		 dead;
	int64_t		 oldest_ms;	/* acked_ms of the oldest unfinished, or 0 */
};

int		 queue_init(void);
void		 queue_free(void);
int		 queue_push(struct event_batch *, long max_queue);
int		 queue_restore(struct event *, int attempts, int64_t due_ms);
long		 queue_unfinished(void);
struct qitem	*queue_take(void);
void		 queue_done(struct qitem *);
void		 queue_retry(struct qitem *, int64_t due_ms);
void		 queue_giveback(struct qitem *);
void		 queue_dead(struct qitem *);
int64_t		 queue_tick(int64_t now_ms);
void		 queue_stats(struct queue_stats *);
int		 queue_wake_fd(void);
void		 queue_clear_wake(void);
void		 queue_wake(void);
int64_t		 queue_now_ms(void);

#endif
