/*
 * io_backend.c - the I/O scenario's backend: a slow API that handlers call.
 * Every request is answered 200 "ok" DELAY_MS after it arrived, so a
 * handler that calls it waits that long; the backend itself does almost no
 * work (one thread, epoll, a FIFO of answers due), so thousands of requests
 * can wait at once without it becoming the bottleneck.
 *
 *	io_backend PORT DELAY_MS LIFETIME_S
 *
 * Binds 127.0.0.1:PORT.  Counts the requests it received, the requests
 * open (received, not yet answered) and the most that were open at once:
 * the events in flight, as the backend sees them.  Two paths are answered
 * at once and not counted:
 *
 *	GET  /stats	{"requests":N,"answered":N,"open":N,"max_open":N,
 *			 "first_ms":T,"last_ms":T} (T: Unix ms of the first
 *			 request received and the last answered, 0 if none)
 *	POST /reset	zeroes the counts (max_open becomes what is open now)
 *
 * Keep-alive and pipelined requests are served in order; a body is read by
 * its Content-Length (chunked bodies are refused).  It exits by itself
 * after LIFETIME_S, or on SIGTERM or SIGINT, and prints the last stats on
 * standard output.
 */
#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define INBUF	16384	/* one request head and body, at most */

enum state { READING, WAITING, WRITING };

struct conn {
	int		 fd;
	enum state	 state;
	int		 dead;		/* closed while WAITING: free when due */
	int		 close_after;	/* Connection: close, or HTTP/1.0 */
	int		 counted;	/* the request being answered is counted */
	long long	 due;		/* monotonic ms when the answer is due */
	struct conn	*next;		/* FIFO of WAITING connections */
	size_t		 inlen;
	char		 in[INBUF];
	const char	*out;
	size_t		 outlen, outoff;
	char		 outbuf[512];
};

static volatile sig_atomic_t stop;
static int epfd;
static long long delay_ms;
static struct conn *due_head, *due_tail;
static long long requests, answered, open_now, max_open, first_ms, last_ms;

static const char OK[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
    "Content-Length: 2\r\n\r\nok";
static const char OK_CLOSE[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
    "Content-Length: 2\r\nConnection: close\r\n\r\nok";
static const char BAD[] =
    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
    "Connection: close\r\n\r\n";

static void
on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static long long
now_ms(clockid_t clk)
{
	struct timespec	 ts;

	clock_gettime(clk, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
stats_json(char *out, size_t size)
{
	return snprintf(out, size, "{\"requests\":%lld,\"answered\":%lld,"
	    "\"open\":%lld,\"max_open\":%lld,\"first_ms\":%lld,"
	    "\"last_ms\":%lld}", requests, answered, open_now, max_open,
	    first_ms, last_ms);
}

static void
set_events(struct conn *c, unsigned events)
{
	struct epoll_event	 ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.ptr = c;
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Close c's socket; its struct is freed now, or when its answer is due if
 * it sits in the FIFO. */
static void
conn_close(struct conn *c)
{
	close(c->fd);
	c->fd = -1;
	if (c->state == WAITING)
		c->dead = 1;
	else
		free(c);
}

static void parse(struct conn *);

/* Write what is left of c's answer; then read the next request. */
static void
flush(struct conn *c)
{
	while (c->outoff < c->outlen) {
		ssize_t n = write(c->fd, c->out + c->outoff,
		    c->outlen - c->outoff);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			c->state = WRITING;
			set_events(c, EPOLLOUT);
			return;
		}
		if (n <= 0) {
			c->state = READING;
			conn_close(c);
			return;
		}
		c->outoff += (size_t)n;
	}
	if (c->close_after) {
		c->state = READING;
		conn_close(c);
		return;
	}
	c->state = READING;
	set_events(c, EPOLLIN);
	parse(c);
}

static void
answer(struct conn *c, const char *text, size_t len)
{
	c->out = text;
	c->outlen = len;
	c->outoff = 0;
	flush(c);
}

/* Take one complete request off c's buffer, if there is one. */
static void
parse(struct conn *c)
{
	char	*end, *p, *line;
	size_t	 head, clen = 0, total;
	int	 n;

	if (c->inlen == 0)
		return;
	end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
	if (end == NULL) {
		if (c->inlen == sizeof(c->in))
			goto bad;
		return;
	}
	head = (size_t)(end - c->in) + 4;
	*end = '\0';
	c->close_after = strstr(c->in, " HTTP/1.0\r") != NULL;
	for (line = strstr(c->in, "\r\n"); line != NULL;
	    line = strstr(line + 2, "\r\n")) {
		p = line + 2;
		if (strncasecmp(p, "Content-Length:", 15) == 0)
			clen = strtoul(p + 15, NULL, 10);
		else if (strncasecmp(p, "Transfer-Encoding:", 18) == 0)
			goto bad;
		else if (strncasecmp(p, "Connection:", 11) == 0) {
			p += 11;
			while (*p == ' ')
				p++;
			if (strncasecmp(p, "close", 5) == 0)
				c->close_after = 1;
			else if (strncasecmp(p, "keep-alive", 10) == 0)
				c->close_after = 0;
		}
	}
	total = head + clen;
	if (total > sizeof(c->in))
		goto bad;
	if (c->inlen < total) {
		*end = '\r';
		return;
	}
	if (strncmp(c->in, "GET /stats ", 11) == 0 ||
	    strncmp(c->in, "POST /reset ", 12) == 0) {
		char	 body[300];

		if (c->in[0] == 'P') {
			requests = answered = 0;
			max_open = open_now;
			first_ms = last_ms = 0;
		}
		stats_json(body, sizeof(body));
		n = snprintf(c->outbuf, sizeof(c->outbuf),
		    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		    "Content-Length: %zu\r\n%s\r\n%s", strlen(body),
		    c->close_after ? "Connection: close\r\n" : "", body);
		memmove(c->in, c->in + total, c->inlen - total);
		c->inlen -= total;
		answer(c, c->outbuf, (size_t)n);
		return;
	}
	memmove(c->in, c->in + total, c->inlen - total);
	c->inlen -= total;
	requests++;
	if (first_ms == 0)
		first_ms = now_ms(CLOCK_REALTIME);
	if (++open_now > max_open)
		max_open = open_now;
	c->counted = 1;
	c->state = WAITING;
	c->due = now_ms(CLOCK_MONOTONIC) + delay_ms;
	c->next = NULL;
	if (due_tail != NULL)
		due_tail->next = c;
	else
		due_head = c;
	due_tail = c;
	set_events(c, 0);	/* nothing more is read until it is answered */
	return;
bad:
	c->close_after = 1;
	c->inlen = 0;
	answer(c, BAD, sizeof(BAD) - 1);
}

static void
on_readable(struct conn *c)
{
	for (;;) {
		ssize_t n;

		if (c->inlen == sizeof(c->in)) {
			parse(c);
			return;
		}
		n = read(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			conn_close(c);
			return;
		}
		c->inlen += (size_t)n;
	}
	parse(c);
}

/* Answer every request whose delay is over. */
static void
answer_due(void)
{
	long long	 now = now_ms(CLOCK_MONOTONIC);

	while (due_head != NULL && due_head->due <= now) {
		struct conn *c = due_head;

		due_head = c->next;
		if (due_head == NULL)
			due_tail = NULL;
		if (c->counted) {
			c->counted = 0;
			open_now--;
			answered++;
			last_ms = now_ms(CLOCK_REALTIME);
		}
		if (c->dead) {
			free(c);
			continue;
		}
		c->state = READING;
		if (c->close_after)
			answer(c, OK_CLOSE, sizeof(OK_CLOSE) - 1);
		else
			answer(c, OK, sizeof(OK) - 1);
	}
}

static void
on_accept(int lfd)
{
	for (;;) {
		struct epoll_event	 ev;
		struct conn		*c;
		int			 fd, one = 1;

		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				fprintf(stderr, "io_backend: accept: %s\n",
				    strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if ((c = calloc(1, sizeof(*c))) == NULL) {
			close(fd);
			continue;
		}
		c->fd = fd;
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
			close(fd);
			free(c);
		}
	}
}

int
main(int argc, char **argv)
{
	struct sockaddr_in	 sa;
	struct epoll_event	 ev, evs[256];
	struct rlimit		 rl;
	struct sigaction	 act;
	static int		 listener;	/* its address tags the socket */
	long long		 deadline;
	char			 out[300];
	int			 lfd, one = 1, i, n;

	if (argc != 4) {
		fprintf(stderr, "usage: io_backend PORT DELAY_MS LIFETIME_S\n");
		return 2;
	}
	delay_ms = atoll(argv[2]);
	deadline = now_ms(CLOCK_MONOTONIC) + atoll(argv[3]) * 1000;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	memset(&act, 0, sizeof(act));
	act.sa_handler = on_signal;
	sigaction(SIGTERM, &act, NULL);
	sigaction(SIGINT, &act, NULL);
	signal(SIGPIPE, SIG_IGN);

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0) {
		perror("io_backend: socket");
		return 1;
	}
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)atoi(argv[1]));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == -1 ||
	    listen(lfd, 4096) == -1) {
		perror("io_backend: bind");
		return 1;
	}
	if ((epfd = epoll_create1(EPOLL_CLOEXEC)) == -1) {
		perror("io_backend: epoll_create1");
		return 1;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.ptr = &listener;
	epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);

	while (!stop) {
		long long	 now = now_ms(CLOCK_MONOTONIC);
		long long	 wait = deadline - now;

		if (wait <= 0)
			break;
		if (due_head != NULL && due_head->due - now < wait)
			wait = due_head->due - now;
		if (wait < 0)
			wait = 0;
		if (wait > 1000)
			wait = 1000;
		n = epoll_wait(epfd, evs, 256, (int)wait);
		if (n < 0 && errno != EINTR) {
			perror("io_backend: epoll_wait");
			return 1;
		}
		for (i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			if ((void *)c == (void *)&listener) {
				on_accept(lfd);
				continue;
			}
			if (c->state == WRITING)
				flush(c);
			else if (c->state == READING)
				on_readable(c);
			else if (evs[i].events & (EPOLLHUP | EPOLLERR))
				conn_close(c);	/* still counted until due */
		}
		answer_due();
	}
	stats_json(out, sizeof(out));
	printf("%s\n", out);
	return 0;
}
