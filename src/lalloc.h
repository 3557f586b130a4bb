/* lalloc.h - a Lua allocator that keeps freed small blocks for reuse. */
#ifndef LALLOC_H
#define LALLOC_H

#include <stddef.h>

#define LALLOC_CLASSES	16		/* 16, 32, ... 256 bytes */

struct lalloc {
	void	*free[LALLOC_CLASSES];	/* linked through the blocks */
	size_t	 nfree[LALLOC_CLASSES];
	size_t	 used;			/* bytes Lua holds */
	size_t	 limit;			/* 0: none */
};

void	*lalloc(void *ud, void *ptr, size_t osize, size_t nsize);
void	 lalloc_drain(struct lalloc *);

#endif
