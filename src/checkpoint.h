/* checkpoint.h - WAL checkpoints mostly off the inbox writer's commits. */
#ifndef CHECKPOINT_H
#define CHECKPOINT_H

#include <stddef.h>

struct db;

int	checkpoint_start(struct db *writer, const char *path, int durability,
	    char *err, size_t errlen);
void	checkpoint_turn(struct db *writer);
void	checkpoint_stop(void);

#endif
