/*
 * lalloc.c - a Lua allocator that keeps freed small blocks for reuse.
 *
 * Decoding a delivery or handling an event makes and drops a few hundred
 * small objects (tables, their parts, strings); glibc's malloc serves
 * them from a cache of 7 blocks per size and falls back to its bins for
 * the rest, which cost the HTTP thread and the worker several percent of
 * their time.  Lua tells the allocator the size of every block it frees
 * or grows, so blocks need no header: each size class (16 bytes apart,
 * up to 256) keeps a list of free blocks, up to CLASS_BYTES of them; the
 * rest go back to malloc.  A state is used by one thread at a time.
 *
 * used and limit count what Lua asked for, for a sandbox's memory cap.
 */
#include "lalloc.h"

#include <stdlib.h>
#include <string.h>

#define CLASS_SHIFT	4
#define SMALL_MAX	(LALLOC_CLASSES << CLASS_SHIFT)
#define CLASS_BYTES	(32 * 1024)	/* kept per class, at most */

static size_t
class_of(size_t size)
{
	return (size - 1) >> CLASS_SHIFT;
}

static size_t
class_size(size_t c)
{
	return (c + 1) << CLASS_SHIFT;
}

static void *
small_get(struct lalloc *a, size_t c)
{
	void	*p = a->free[c];

	if (p == NULL)
		return malloc(class_size(c));
	memcpy(&a->free[c], p, sizeof(void *));
	a->nfree[c]--;
	return p;
}

static void
small_put(struct lalloc *a, size_t c, void *p)
{
	if (a->nfree[c] * class_size(c) >= CLASS_BYTES) {
		free(p);
		return;
	}
	memcpy(p, &a->free[c], sizeof(void *));
	a->free[c] = p;
	a->nfree[c]++;
}

void *
lalloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct lalloc	*a = ud;
	void		*p;

	if (ptr == NULL)
		osize = 0;	/* osize then encodes the object's type */
	if (nsize == 0) {
		if (osize > 0 && osize <= SMALL_MAX)
			small_put(a, class_of(osize), ptr);
		else
			free(ptr);
		a->used -= osize;
		return NULL;
	}
	if (nsize > osize && a->limit != 0 &&
	    a->used + (nsize - osize) > a->limit)
		return NULL;
	if (osize > SMALL_MAX && nsize > SMALL_MAX) {
		if ((p = realloc(ptr, nsize)) == NULL)
			return NULL;
	} else if (osize > 0 && nsize <= SMALL_MAX &&
	    class_of(osize) == class_of(nsize)) {
		p = ptr;		/* the block has the room */
	} else {
		p = nsize <= SMALL_MAX ? small_get(a, class_of(nsize)) :
		    malloc(nsize);
		if (p == NULL)
			return NULL;
		if (osize > 0) {
			memcpy(p, ptr, osize < nsize ? osize : nsize);
			if (osize <= SMALL_MAX)
				small_put(a, class_of(osize), ptr);
			else
				free(ptr);
		}
	}
	a->used = a->used - osize + nsize;
	return p;
}

/* Give the kept blocks back to malloc (after lua_close). */
void
lalloc_drain(struct lalloc *a)
{
	size_t	 c;
	void	*p, *next;

	for (c = 0; c < LALLOC_CLASSES; c++) {
		for (p = a->free[c]; p != NULL; p = next) {
			memcpy(&next, p, sizeof(void *));
			free(p);
		}
		a->free[c] = NULL;
		a->nfree[c] = 0;
	}
}
