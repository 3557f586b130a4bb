/*
 * buf.c - growable, NUL-terminated byte buffers.
 *
 * Every function returns 0, or -1 when memory runs out (the buffer is then
 * left as it was).  Used by every thread; a buf itself is never shared.
 */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hex.h"

int
buf_reserve(struct buf *b, size_t more)
{
	size_t	 need, cap;
	char	*p;

	if (more > ((size_t)-1) / 2 - b->len)
		return -1;
	need = b->len + more + 1;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	if ((p = realloc(b->data, cap)) == NULL)
		return -1;
	b->data = p;
	b->cap = cap;
	return 0;
}

/* buf_append when the bytes do not fit (or nothing is allocated yet). */
int
buf_append_grow(struct buf *b, const void *p, size_t n)
{
	if (buf_reserve(b, n) == -1)
		return -1;
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int
buf_puts(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list	 ap;
	size_t	 room;
	int	 n;

	/* format into the room there is; only when it is short, twice */
	room = b->data != NULL ? b->cap - b->len : 0;
	va_start(ap, fmt);
	n = vsnprintf(room > 0 ? b->data + b->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= room) {
		if (buf_reserve(b, (size_t)n) == -1) {
			if (b->data != NULL)
				b->data[b->len] = '\0';
			return -1;
		}
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
	return 0;
}

/*
 * Append s as a quoted JSON string.  Control characters are escaped; other
 * bytes pass through, so valid UTF-8 stays readable in logs.
 */
int
buf_json_string(struct buf *b, const char *s, size_t n)
{
	size_t		 i;
	unsigned char	 c;
	char		 esc[7] = { '\\', 'u', '0', '0' };	/* \u00XX\0 */

	if (buf_reserve(b, n + 2) == -1 || buf_append(b, "\"", 1) == -1)
		return -1;
	for (i = 0; i < n; i++) {
		c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			if (buf_append(b, e, 2) == -1)
				return -1;
		} else if (c == '\n') {
			if (buf_append(b, "\\n", 2) == -1)
				return -1;
		} else if (c == '\t') {
			if (buf_append(b, "\\t", 2) == -1)
				return -1;
		} else if (c < 0x20 || c == 0x7f) {
			hex_encode(&c, 1, esc + 4);
			if (buf_append(b, esc, 6) == -1)
				return -1;
		} else if (buf_append(b, &s[i], 1) == -1)
			return -1;
	}
	return buf_append(b, "\"", 1);
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

void
buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* Hand the bytes to the caller (caller frees); the buf is left empty. */
char *
buf_steal(struct buf *b)
{
	char	*p = b->data;

	if (p == NULL)
		p = calloc(1, 1);
	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}
