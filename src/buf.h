/* buf.h - a growable byte buffer, always NUL-terminated. */
#ifndef BUF_H
#define BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char	*data;		/* owned; NULL until the first append */
	size_t	 len;
	size_t	 cap;
};

int	buf_reserve(struct buf *, size_t more);
int	buf_append(struct buf *, const void *, size_t);
int	buf_puts(struct buf *, const char *);
int	buf_printf(struct buf *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
int	buf_json_string(struct buf *, const char *, size_t);
void	buf_reset(struct buf *);
void	buf_free(struct buf *);
char	*buf_steal(struct buf *);

#endif
