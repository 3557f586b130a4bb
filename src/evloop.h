/* evloop.h - a worker's event loop: file descriptors (epoll) and timers. */
#ifndef EVLOOP_H
#define EVLOOP_H

#include <stdint.h>

/* A file descriptor to watch; embedded in its owner's struct. */
struct evloop_fd {
	int		 fd;
	void		(*cb)(struct evloop_fd *, unsigned events);
	void		*arg;
};

/* A one-shot timer; embedded in its owner's struct, zeroed to start. */
struct evloop_timer {
	int64_t		 when_ms;
	void		(*cb)(struct evloop_timer *);
	void		*arg;
	int		 index;		/* in the heap; -1: not armed */
};

#define EVLOOP_IN	1u
#define EVLOOP_OUT	2u
#define EVLOOP_ERR	4u

int	 evloop_init(void);
void	 evloop_free(void);
int64_t	 evloop_now_ms(void);
int	 evloop_watch(struct evloop_fd *, unsigned events);
void	 evloop_unwatch(struct evloop_fd *);
int	 evloop_timer_start(struct evloop_timer *, int64_t when_ms);
void	 evloop_timer_stop(struct evloop_timer *);
int	 evloop_timer_armed(const struct evloop_timer *);
int	 evloop_run_once(int64_t max_wait_ms);

#endif
