/*
 * listener.c - the listening sockets walua opens (or is handed by systemd
 * or the walua before it) itself, and gives to libmicrohttpd's daemons
 * (mhdloop.c): several daemons share one, and the socket outlives them
 * in the process an upgrade hands it to.
 */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bind a new socket to ai's address; returns it or -1 with errno set. */
static int
bind_new(const struct addrinfo *ai, int share)
{
	int	fd, on = 1, saved;

	if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, ai->ai_protocol)) == -1)
		return -1;
	/* a restart binds at once, whatever still lingers in TIME_WAIT */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1 ||
	    (share && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on,
	    sizeof(on)) == -1) ||
	    (ai->ai_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6,
	    IPV6_V6ONLY, &on, sizeof(on)) == -1) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) == -1 ||
	    listen(fd, SOMAXCONN) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/*
 * The socket for config key `key` (its value addr: host and port): fd
 * when one is handed over (systemd, an upgrade), else a new one bound to
 * host:port, shared with other sockets that ask (SO_REUSEPORT) when share
 * is set.  Returns it, nonblocking, or -1 with the reason in err.
 */
int
listener_open(const char *key, const char *addr, const char *host, int port,
    int fd, int share, char *err, size_t errlen)
{
	struct addrinfo	 hints, *ai = NULL;
	char		 service[16];
	int		 rc, flags;

	if (fd != -1) {
		/* nonblocking: each daemon sharing it, and a process sharing
		 * it, may take a connection between a poll and an accept */
		if ((flags = fcntl(fd, F_GETFL)) == -1 ||
		    fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1) {
			snprintf(err, errlen, "%s: the socket handed over: %s",
			    key, strerror(errno));
			return -1;
		}
		return fd;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(service, sizeof(service), "%d", port);
	if ((rc = getaddrinfo(host[0] ? host : NULL, service, &hints,
	    &ai)) != 0) {
		snprintf(err, errlen, "%s '%s': %s", key, addr,
		    gai_strerror(rc));
		return -1;
	}
	fd = bind_new(ai, share);
	freeaddrinfo(ai);
	if (fd == -1)
		snprintf(err, errlen, "cannot listen on %s '%s': %s", key, addr,
		    strerror(errno));
	return fd;
}

