/*
 * listener.c - a listening socket walua owns, and a thread that accepts
 * its connections and hands each to libmicrohttpd (MHD_add_connection).
 *
 * Why not let libmicrohttpd listen: the only way it has to stop accepting
 * while its threads run, MHD_quiesce_daemon(), races with its own polling
 * thread in 0.9.75 (both take the listening socket out of the epoll set,
 * without a lock, and the one that comes second aborts the process with
 * "Failed to remove listen FD from epoll set").  walua stops accepting on
 * every stop and every upgrade, so it does that itself: the accepting
 * thread ends, and the socket stays open in whatever process shares it
 * (the new binary of an upgrade), where the kernel queues connections.
 *
 * At max_conns open connections the thread accepts nothing: connections
 * wait in the listen backlog, as they did behind libmicrohttpd's own
 * limit.  libmicrohttpd counts a connection once its thread has taken it
 * in, so one more may be accepted in the moment before it has: the
 * descriptors walua keeps spare cover that.
 */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mhd.h"

#include "log.h"
#include "queue.h"

#define LISTENER_BATCH	32	/* connections accepted in a row at most */
#define FULL_MS		10	/* at max_conns, after a batch: look again */
#define ERROR_MS	50	/* accept failing (out of descriptors) */
#define ERROR_LOG_MS	1000	/* one log line a second at most */

struct listener {
	int			 fd;
	int			 stopfd;	/* eventfd: stop accepting */
	int			 running;
	unsigned int		 max_conns;
	struct MHD_Daemon	*daemon;
	pthread_t		 thread;
	char			 name[64];	/* "listen '127.0.0.1:8080'" */
};

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
 * is set.  Returns the listener, not accepting yet, or NULL with the
 * reason in err.
 */
struct listener *
listener_open(const char *key, const char *addr, const char *host, int port,
    int fd, int share, char *err, size_t errlen)
{
	struct listener	*l;
	struct addrinfo	 hints, *ai = NULL;
	char		 service[16];
	int		 rc, flags;

	if ((l = calloc(1, sizeof(*l))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	l->fd = l->stopfd = -1;
	snprintf(l->name, sizeof(l->name), "%s '%s'", key, addr);
	if (fd != -1) {
		/* nonblocking: a process sharing it may take a connection
		 * between our poll and our accept */
		if ((flags = fcntl(fd, F_GETFL)) == -1 ||
		    fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1) {
			snprintf(err, errlen, "%s: the socket handed over: %s",
			    key, strerror(errno));
			free(l);
			return NULL;
		}
		l->fd = fd;
		return l;
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
		free(l);
		return NULL;
	}
	l->fd = bind_new(ai, share);
	freeaddrinfo(ai);
	if (l->fd == -1) {
		snprintf(err, errlen, "cannot listen on %s: %s", l->name,
		    strerror(errno));
		free(l);
		return NULL;
	}
	return l;
}

int
listener_fd(const struct listener *l)
{
	return l != NULL ? l->fd : -1;
}

static unsigned int
open_connections(struct MHD_Daemon *d)
{
	const union MHD_DaemonInfo	*di;

	di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	return di != NULL ? di->num_connections : 0;
}

/* Accept what is queued, room connections at most; returns how many were
 * handed over, or -1 on an error that leaves the socket readable (out of
 * descriptors). */
static int
accept_batch(struct listener *l, unsigned int room)
{
	struct sockaddr_storage	 sa;
	socklen_t		 len;
	unsigned int		 n = 0;
	int			 c;

	while (n < room && n < LISTENER_BATCH) {
		len = sizeof(sa);
		c = accept4(l->fd, (struct sockaddr *)&sa, &len,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return n > 0 ? (int)n : -1;
		}
		/* on failure libmicrohttpd has closed it (and logged why) */
		(void)MHD_add_connection(l->daemon, c,
		    (const struct sockaddr *)&sa, len);
		n++;
	}
	return (int)n;
}

static void *
accept_loop(void *arg)
{
	struct listener	*l = arg;
	struct pollfd	 pfd[2];
	int64_t		 logged = 0;
	unsigned int	 open;
	int		 timeout, handed = 0;
	uint64_t	 v;

	pthread_setname_np(pthread_self(), "accept");	/* top -H */
	pfd[0].fd = l->stopfd;
	pfd[0].events = POLLIN;
	pfd[1].fd = l->fd;
	pfd[1].events = POLLIN;
	for (;;) {
		/*
		 * At the limit the socket is left alone and looked at again
		 * soon; so is it after a batch, until libmicrohttpd has
		 * counted what it was handed.
		 */
		open = open_connections(l->daemon);
		pfd[1].fd = open < l->max_conns ? l->fd : -1;
		timeout = pfd[1].fd == -1 || handed > 0 ? FULL_MS : -1;
		if (poll(pfd, 2, timeout) == -1 && errno != EINTR)
			break;
		if (pfd[0].revents != 0) {
			(void)!read(l->stopfd, &v, sizeof(v));
			break;
		}
		handed = 0;
		if (pfd[1].fd == -1 || (pfd[1].revents & POLLIN) == 0)
			continue;
		if ((handed = accept_batch(l, l->max_conns - open)) >= 0)
			continue;
		handed = 0;
		if (queue_now_ms() - logged >= ERROR_LOG_MS) {
			logged = queue_now_ms();
			log_kv(LOG_ERROR, "cannot accept connections",
			    "listener", l->name, "error", strerror(errno),
			    NULL);
		}
		poll(pfd, 1, ERROR_MS);		/* the stop, or a pause */
		if (pfd[0].revents != 0)
			break;
	}
	return NULL;
}

/* Accept on l for daemon d (started with MHD_USE_NO_LISTEN_SOCKET). */
int
listener_start(struct listener *l, struct MHD_Daemon *d,
    unsigned int max_conns, char *err, size_t errlen)
{
	int	rc;

	l->daemon = d;
	l->max_conns = max_conns;
	if ((l->stopfd = eventfd(0, EFD_CLOEXEC)) == -1) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		return -1;
	}
	if ((rc = pthread_create(&l->thread, NULL, accept_loop, l)) != 0) {
		snprintf(err, errlen, "pthread_create: %s", strerror(rc));
		close(l->stopfd);
		l->stopfd = -1;
		return -1;
	}
	l->running = 1;
	return 0;
}

/*
 * Stop accepting and close l's socket (a process that shares it, the new
 * binary of an upgrade, keeps it listening).  Connections accepted
 * before are libmicrohttpd's.
 */
void
listener_close(struct listener *l)
{
	uint64_t	one = 1;

	if (l == NULL)
		return;
	if (l->running) {
		(void)!write(l->stopfd, &one, sizeof(one));
		pthread_join(l->thread, NULL);
	}
	if (l->stopfd != -1)
		close(l->stopfd);
	if (l->fd != -1)
		close(l->fd);
	free(l);
}
