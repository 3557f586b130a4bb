/* metrics.h - counters, gauges and a histogram, in Prometheus text format. */
#ifndef METRICS_H
#define METRICS_H

#include "buf.h"

struct metric;

struct metric	*metrics_series(const char *family, const char *labels);
void	metrics_add(struct metric *, double by);
void	metrics_sample(struct metric *, double seconds);
void	metrics_inc(const char *family, const char *labels, double by);
void	metrics_set(const char *family, const char *labels, double value);
void	metrics_observe(const char *family, double seconds);
void	metrics_record(const char *family, const char *labels, double value);
int	metrics_render(struct buf *);
void	metrics_on_render(void (*)(void));
void	metrics_free(void);

#endif
