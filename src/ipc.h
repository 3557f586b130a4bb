/* ipc.h - length-prefixed frames between the supervisor and its workers. */
#ifndef IPC_H
#define IPC_H

#include <stddef.h>

#include "buf.h"

#define IPC_MAX_FRAME	(64u << 20)

/*
 * An event frame (pool.c, dispatch) is the type byte, a header line (slot,
 * id, attempt, "stale", kind, message id, status rank, conversation, between
 * tabs) and the event's JSON.  The header without the kind, message id
 * and conversation takes less than IPC_EVENT_SLACK bytes.
 */
#define IPC_EVENT_SLACK	128

/* Frame types. */
#define IPC_LOAD	'L'	/* supervisor -> worker: config + handler sources */
#define IPC_READY	'R'	/* worker -> supervisor: loaded, or the errors */
#define IPC_EVENT	'E'	/* supervisor -> worker: one event */
#define IPC_DONE	'D'	/* worker -> supervisor: its outcome */
#define IPC_METRIC	'M'	/* worker -> supervisor: family\0labels\0value */

struct ipc_reader {
	struct buf	 in;
	size_t		 consumed;	/* bytes of in already returned */
};

int	ipc_send(int fd, char type, const void *a, size_t alen,
	    const void *b, size_t blen);
int	ipc_recv(int fd, struct ipc_reader *, char *type, char **p,
	    size_t *len);
int	ipc_frame(struct buf *, char type, const void *a, size_t alen,
	    const void *b, size_t blen, const void *c, size_t clen);
int	ipc_write(int fd, struct buf *);
int	ipc_fill(struct ipc_reader *, int fd);
int	ipc_next(struct ipc_reader *, char *type, const char **p, size_t *len);
void	ipc_reader_free(struct ipc_reader *);

#endif
