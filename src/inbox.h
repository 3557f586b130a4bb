/* inbox.h - the durable inbox: commit before the 200, outcomes, replays. */
#ifndef INBOX_H
#define INBOX_H

#include <stdint.h>

#include "event.h"
#include "queue.h"

struct config;

int	inbox_open(const struct config *, char *err, size_t errlen);
void	inbox_close(void);
/* One request's events on their way to a commit (see inbox_submit). */
struct inbox_ticket {
	struct event_batch	*batch;		/* in: the events; emptied */
	const char		*provider;	/* in */
	const char		*endpoint;	/* in */
	const struct config	*cfg;		/* in: its limits; held until
						 * done is called */
	void			(*done)(struct inbox_ticket *);
	void			*arg;		/* for done */
	struct inbox_ticket	*next;		/* in: the list handed at once;
						 * then the writer's */
	int			 rc;		/* out: 0 or -1 */
	int			 full;		/* out: failed on max_queue */
	int			 nnew, ndup;	/* out */
};

int	inbox_submit(struct inbox_ticket *);
void	inbox_done(const struct qitem *, long long duration_us);
int	inbox_unmarked(void);
void	inbox_flush(void);
void	inbox_retry(const struct qitem *, int64_t due_wall_ms);
void	inbox_dead(const struct qitem *);
int	inbox_healthy(void);
long	inbox_dead_count(void);
void	inbox_note_rank(const char *message_id, int rank);
int	inbox_handled_rank(const struct qitem *);

#endif
