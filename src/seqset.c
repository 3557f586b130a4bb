/*
 * seqset.c - see seqset.h.  A sorted array: an add past the end is an
 * append, a delete marks its entry gone (a binary search), the front
 * skips what is gone, and the array is compacted when most of it is
 * gone.  The few seqs that come back below the end (events replayed, or
 * loaded at the start) are inserted in place.
 */
#include <stdlib.h>
#include <string.h>

#include "seqset.h"

/* The first index in [head, len) whose seq is >= seq. */
static size_t
lower(const struct seqset *s, long long seq)
{
	size_t	lo = s->head, hi = s->len, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (s->v[mid] < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Move the live entries to the front. */
static void
compact(struct seqset *s)
{
	size_t	i, n = 0;

	for (i = s->head; i < s->len; i++)
		if (!s->gone[i]) {
			s->v[n] = s->v[i];
			s->gone[n++] = 0;
		}
	s->head = 0;
	s->len = n;
	s->ngone = 0;
}

static int
grow(struct seqset *s)
{
	size_t		 cap = s->cap ? s->cap * 2 : 256;
	long long	*v;
	unsigned char	*g;

	if ((v = realloc(s->v, cap * sizeof(*v))) == NULL)
		return -1;
	s->v = v;
	if ((g = realloc(s->gone, cap)) == NULL)
		return -1;
	s->gone = g;
	s->cap = cap;
	return 0;
}

/* Where seq is or goes: the end, unless it is not past the last. */
static size_t
place(const struct seqset *s, long long seq)
{
	return s->len > s->head && seq <= s->v[s->len - 1] ? lower(s, seq) :
	    s->len;
}

int
seqset_add(struct seqset *s, long long seq)
{
	size_t	i = place(s, seq);

	if (i < s->len && s->v[i] == seq) {
		if (s->gone[i]) {
			s->gone[i] = 0;
			s->ngone--;
		}
		return 0;
	}
	if (s->len == s->cap) {
		if (s->head > 0 || s->ngone > 0) {
			compact(s);
			i = place(s, seq);
		}
		if (s->len == s->cap && grow(s) == -1)
			return -1;
	}
	memmove(s->v + i + 1, s->v + i, (s->len - i) * sizeof(*s->v));
	memmove(s->gone + i + 1, s->gone + i, s->len - i);
	s->v[i] = seq;
	s->gone[i] = 0;
	s->len++;
	return 0;
}

void
seqset_del(struct seqset *s, long long seq)
{
	size_t	i = lower(s, seq);

	if (i == s->len || s->v[i] != seq || s->gone[i])
		return;
	s->gone[i] = 1;
	s->ngone++;
	while (s->head < s->len && s->gone[s->head]) {
		s->head++;
		s->ngone--;
	}
	if (s->head == s->len)
		s->head = s->len = 0;
	else if (s->ngone > 64 && s->ngone > (s->len - s->head) / 2)
		compact(s);
}

int
seqset_min(const struct seqset *s, long long *min)
{
	if (s->head == s->len)
		return 0;
	*min = s->v[s->head];
	return 1;
}

size_t
seqset_count(const struct seqset *s)
{
	return s->len - s->head - s->ngone;
}

void
seqset_free(struct seqset *s)
{
	free(s->v);
	free(s->gone);
	memset(s, 0, sizeof(*s));
}
