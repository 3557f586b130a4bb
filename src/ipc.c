/*
 * ipc.c - frames over the socketpair between the supervisor and a worker:
 * a 4-byte big-endian length (of what follows), a type byte, the payload.
 *
 * The worker side blocks (ipc_recv); the supervisor reads without blocking
 * from its poll loop (ipc_fill, then ipc_next until it says no more).
 * Both read into a reader's buffer, as much as is there: one read brings
 * a frame whole, most of the time.
 */
#include "ipc.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* Write the whole frame (blocking).  Returns 0, or -1 with errno set. */
int
ipc_send(int fd, char type, const void *a, size_t alen, const void *b,
    size_t blen)
{
	unsigned char	 hdr[5];
	struct iovec	 iov[3];
	struct msghdr	 mh;
	size_t		 total = 1 + alen + blen;
	ssize_t		 n;

	if (total > IPC_MAX_FRAME) {
		errno = EMSGSIZE;
		return -1;
	}
	hdr[0] = (unsigned char)(total >> 24);
	hdr[1] = (unsigned char)(total >> 16);
	hdr[2] = (unsigned char)(total >> 8);
	hdr[3] = (unsigned char)total;
	hdr[4] = (unsigned char)type;
	iov[0].iov_base = hdr;
	iov[0].iov_len = sizeof(hdr);
	iov[1].iov_base = (void *)(uintptr_t)a;
	iov[1].iov_len = alen;
	iov[2].iov_base = (void *)(uintptr_t)b;
	iov[2].iov_len = blen;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = 3;
	while (mh.msg_iovlen > 0) {
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		/* drop what was sent from the front of the vector */
		while (n > 0 && mh.msg_iovlen > 0) {
			if ((size_t)n >= mh.msg_iov[0].iov_len) {
				n -= (ssize_t)mh.msg_iov[0].iov_len;
				mh.msg_iov++;
				mh.msg_iovlen--;
			} else {
				mh.msg_iov[0].iov_base =
				    (char *)mh.msg_iov[0].iov_base + n;
				mh.msg_iov[0].iov_len -= (size_t)n;
				n = 0;
			}
		}
		while (mh.msg_iovlen > 0 && mh.msg_iov[0].iov_len == 0) {
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
	}
	return 0;
}

/* Drop the frames already returned from the front of r's buffer. */
static void
compact(struct ipc_reader *r)
{
	if (r->consumed > 0) {
		memmove(r->in.data, r->in.data + r->consumed,
		    r->in.len - r->consumed);
		r->in.len -= r->consumed;
		r->consumed = 0;
	}
}

/*
 * Read one frame (blocking fd): points p at its payload, valid and
 * writable until the next call.  One read usually brings a whole frame
 * (and whatever follows it).  Returns 0, or -1 at end of file or on error.
 */
int
ipc_recv(int fd, struct ipc_reader *r, char *type, char **p, size_t *len)
{
	const char	*q;
	ssize_t		 n;
	int		 rc;

	compact(r);
	while ((rc = ipc_next(r, type, &q, len)) == 0) {
		if (buf_reserve(&r->in, 65536) == -1)
			return -1;
		n = read(fd, r->in.data + r->in.len, r->in.cap - r->in.len - 1);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		r->in.len += (size_t)n;
	}
	*p = r->in.data + (q - r->in.data);
	return rc == 1 ? 0 : -1;
}

/*
 * Read what the socket has (non-blocking fd).  Returns 0, or -1 at end of
 * file or on error (the peer is gone).
 */
int
ipc_fill(struct ipc_reader *r, int fd)
{
	size_t	room;
	ssize_t	n;

	compact(r);
	for (;;) {
		if (buf_reserve(&r->in, 65536) == -1)
			return -1;
		room = r->in.cap - r->in.len - 1;
		n = recv(fd, r->in.data + r->in.len, room, MSG_DONTWAIT);
		if (n > 0) {
			r->in.len += (size_t)n;
			/* a short read took all there was: poll says when more */
			if ((size_t)n < room)
				return 0;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		return -1;
	}
}

/*
 * The next complete frame, if any: returns 1 and points p at its payload
 * (valid until the next ipc_fill), 0 when none is complete, -1 when the
 * stream is corrupt.
 */
int
ipc_next(struct ipc_reader *r, char *type, const char **p, size_t *len)
{
	const unsigned char	*h;
	size_t			 avail = r->in.len - r->consumed, n;

	if (avail < 5)
		return 0;
	h = (const unsigned char *)r->in.data + r->consumed;
	n = ((size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3]);
	if (n < 1 || n > IPC_MAX_FRAME)
		return -1;
	if (avail < 4 + n)
		return 0;
	*type = (char)h[4];
	*p = (const char *)h + 5;
	*len = n - 1;
	r->consumed += 4 + n;
	return 1;
}

void
ipc_reader_free(struct ipc_reader *r)
{
	buf_free(&r->in);
	r->consumed = 0;
}

/*
 * Append a frame of up to three parts to out (a worker batches what it
 * sends in one turn of its loop).  Returns 0 or -1 (no memory, or too
 * large: nothing appended).
 */
int
ipc_frame(struct buf *out, char type, const void *a, size_t alen,
    const void *b, size_t blen, const void *c, size_t clen)
{
	size_t		total = 1 + alen + blen + clen, len = out->len;
	unsigned char	hdr[5];

	if (total > IPC_MAX_FRAME)
		return -1;
	hdr[0] = (unsigned char)(total >> 24);
	hdr[1] = (unsigned char)(total >> 16);
	hdr[2] = (unsigned char)(total >> 8);
	hdr[3] = (unsigned char)total;
	hdr[4] = (unsigned char)type;
	if (buf_append(out, hdr, 5) == -1 || (alen > 0 &&
	    buf_append(out, a, alen) == -1) || (blen > 0 &&
	    buf_append(out, b, blen) == -1) || (clen > 0 &&
	    buf_append(out, c, clen) == -1)) {
		out->len = len;
		return -1;
	}
	return 0;
}

/* Write all of out (blocking), then empty it.  Returns 0 or -1. */
int
ipc_write(int fd, struct buf *out)
{
	size_t	off = 0;
	ssize_t	n;

	while (off < out->len) {
		n = send(fd, out->data + off, out->len - off, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		off += (size_t)n;
	}
	buf_reset(out);
	return 0;
}
