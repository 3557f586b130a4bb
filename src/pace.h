/* pace.h - sends per business number, paced across every worker. */
#ifndef PACE_H
#define PACE_H

#include <stdint.h>

int	 pace_create(void);
int	 pace_attach(int fd);
int64_t	 pace_reserve(const char *number, int per_second, int64_t max_wait_ns);

#endif
