/* checkpoint.h - WAL checkpoints in a thread of their own (inbox writer). */
#ifndef CHECKPOINT_H
#define CHECKPOINT_H

#include <stddef.h>

struct db;

int	checkpoint_start(struct db *writer, const char *path, int durability,
	    char *err, size_t errlen);
void	checkpoint_stop(void);

#endif
