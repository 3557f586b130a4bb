/* buf.h - a growable byte buffer, always NUL-terminated. */
#ifndef BUF_H
#define BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

struct buf {
	char	*data;		/* owned; NULL until the first append */
	size_t	 len;
	size_t	 cap;
};

int	buf_reserve(struct buf *, size_t more);
int	buf_append_grow(struct buf *, const void *, size_t);
int	buf_puts(struct buf *, const char *);
int	buf_printf(struct buf *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
int	buf_json_string(struct buf *, const char *, size_t);
void	buf_reset(struct buf *);
void	buf_free(struct buf *);
char	*buf_steal(struct buf *);

/*
 * Append n bytes.  Inline because packing an event appends a hundred
 * small pieces (pack.c): when they fit, that is a copy and no call.
 */
static inline int
buf_append(struct buf *b, const void *p, size_t n)
{
	if (n >= b->cap - b->len)	/* no room for n and the NUL */
		return buf_append_grow(b, p, n);
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

#endif
