/* minutes.h - events acknowledged and handled per minute, the last hour. */
#ifndef MINUTES_H
#define MINUTES_H

#include <stdint.h>

#define MINUTES		60

enum { MINUTES_ACKED, MINUTES_HANDLED, MINUTES_SERIES };

void	minutes_add(int series, long n);
void	minutes_get(int64_t *first_minute, long out[MINUTES_SERIES][MINUTES]);

#endif
