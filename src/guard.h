/* guard.h - the public listener's connections: head deadline, per-address
 * limit, room under pressure, idle ones closed on stop. */
#ifndef GUARD_H
#define GUARD_H

#include <sys/socket.h>

struct guard_conn;

struct guard_limits {
	int	head_ms;	/* a first request head must be in by then */
	int	kept_ms;	/* a later one, after the previous request */
	int	max_conns;	/* what libmicrohttpd accepts in all */
	int	per_ip;		/* per client address, 0: no limit */
};

int	guard_start(const struct guard_limits *, char *err, size_t errlen);
void	guard_stop(void);
struct guard_conn *guard_open(int fd, const struct sockaddr *);
int	guard_head(struct guard_conn *);
void	guard_idle(struct guard_conn *);
void	guard_close(struct guard_conn *);
void	guard_drain(int fresh_ms);
int	guard_count(void);
int	guard_room(int max_conns);

#endif
