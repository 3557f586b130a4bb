/* inbox.h - the durable inbox: commit before the 200, outcomes, replays. */
#ifndef INBOX_H
#define INBOX_H

#include <stdint.h>

#include "event.h"
#include "queue.h"

struct config;

int	inbox_open(const struct config *, char *err, size_t errlen);
void	inbox_close(void);
int	inbox_submit(struct event_batch *, const struct config *,
	    const char *provider, const char *endpoint, int *nnew, int *ndup,
	    int *full);
void	inbox_done(const struct qitem *, long long duration_us);
void	inbox_retry(const struct qitem *, int64_t due_wall_ms);
void	inbox_dead(const struct qitem *);
int	inbox_healthy(void);
long	inbox_dead_count(void);
int	inbox_status_rank(const char *status);
void	inbox_note_rank(const char *message_id, int rank);
int	inbox_handled_rank(const char *message_id);

#endif
