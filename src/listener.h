/* listener.h - a listening socket walua owns, and the thread that accepts
 * its connections and hands them to libmicrohttpd. */
#ifndef LISTENER_H
#define LISTENER_H

#include <stddef.h>

#include <limits.h>

/*
 * libmicrohttpd's own connection limit for a daemon fed by a listener:
 * one it can never reach.  listener.c keeps to the real one; libmicrohttpd
 * 0.9.75 deadlocks on a connection added past its limit (the path that
 * refuses it leaves a mutex locked).
 */
#define LISTENER_MHD_LIMIT	UINT_MAX

struct MHD_Daemon;
struct listener;

struct listener	*listener_open(const char *key, const char *addr,
		    const char *host, int port, int fd, int share,
		    char *err, size_t errlen);
int		 listener_start(struct listener *, struct MHD_Daemon *,
		    unsigned int max_conns, char *err, size_t errlen);
int		 listener_fd(const struct listener *);
void		 listener_close(struct listener *);

#endif
