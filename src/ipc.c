/*
 * ipc.c - frames over the socketpair between the supervisor and a worker:
 * a 4-byte big-endian length (of what follows), a type byte, the payload.
 *
 * The worker side blocks (ipc_recv); the supervisor reads without blocking
 * from its poll loop (ipc_fill, then ipc_next until it says no more).
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

static int
read_full(int fd, void *p, size_t n)
{
	ssize_t	r;
	size_t	off = 0;

	while (off < n) {
		r = read(fd, (char *)p + off, n - off);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		off += (size_t)r;
	}
	return 0;
}

/*
 * Read one frame (blocking) into payload (replacing what it held).
 * Returns 0, or -1 at end of file or on error.
 */
int
ipc_recv(int fd, char *type, struct buf *payload)
{
	unsigned char	hdr[5];
	size_t		len;

	if (read_full(fd, hdr, sizeof(hdr)) == -1)
		return -1;
	len = ((size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 |
	    (size_t)hdr[2] << 8 | hdr[3]);
	if (len < 1 || len > IPC_MAX_FRAME)
		return -1;
	*type = (char)hdr[4];
	buf_reset(payload);
	if (buf_reserve(payload, len - 1) == -1 ||
	    read_full(fd, payload->data, len - 1) == -1)
		return -1;
	payload->len = len - 1;
	payload->data[payload->len] = '\0';
	return 0;
}

/*
 * Read what the socket has (non-blocking fd).  Returns 0, or -1 at end of
 * file or on error (the peer is gone).
 */
int
ipc_fill(struct ipc_reader *r, int fd)
{
	ssize_t	n;

	if (r->consumed > 0) {		/* drop the frames already returned */
		memmove(r->in.data, r->in.data + r->consumed,
		    r->in.len - r->consumed);
		r->in.len -= r->consumed;
		r->consumed = 0;
	}
	for (;;) {
		if (buf_reserve(&r->in, 65536) == -1)
			return -1;
		n = recv(fd, r->in.data + r->in.len, r->in.cap - r->in.len - 1,
		    MSG_DONTWAIT);
		if (n > 0) {
			r->in.len += (size_t)n;
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
