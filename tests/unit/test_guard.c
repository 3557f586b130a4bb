/*
 * test_guard.c - which waiting connections guard.c shuts down: past the
 * per-address limit, near max_conns, past their head deadline, on stop;
 * never one whose head is complete.  Connections are socketpairs: a
 * shutdown is the peer reading the end of the stream.
 */
#include "guard.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"

#define MAXC	64

static int	own[MAXC], peer[MAXC];	/* the server's end, the client's */
static struct guard_conn *conn[MAXC];

static struct sockaddr_in
addr(int last)
{
	struct sockaddr_in sa;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(0x7f000000u | (unsigned)last);
	return sa;
}

/* Open connection i from 127.0.0.last. */
static void
open_from(int i, int last)
{
	struct sockaddr_in	sa = addr(last);
	int			sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1) {
		perror("socketpair");
		return;
	}
	own[i] = sv[0];
	peer[i] = sv[1];
	conn[i] = guard_open(sv[0], (struct sockaddr *)&sa);
	CHECK(conn[i] != NULL);
}

/* Whether connection i was shut down (its peer sees the end) within ms. */
static int
is_shut(int i, int ms)
{
	struct pollfd	p = { peer[i], POLLIN, 0 };
	char		c;

	if (poll(&p, 1, ms) != 1)
		return 0;
	return recv(peer[i], &c, 1, MSG_DONTWAIT) == 0;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Close connections 0..n-1 as libmicrohttpd would: told, then closed. */
static void
close_all(int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (conn[i] != NULL) {
			guard_close(conn[i]);
			conn[i] = NULL;
			close(own[i]);
			close(peer[i]);
		}
}

static int
start(int head_ms, int kept_ms, int max_conns, int per_ip)
{
	struct guard_limits	l = { head_ms, kept_ms, max_conns, per_ip };
	char			err[128];

	return guard_start(&l, err, sizeof(err));
}

int
main(void)
{
	int i;

	/* per address: the longest waiting goes; the new one when none waits */
	CHECK(start(10000, 10000, 1000, 2) == 0);
	open_from(0, 1);
	open_from(1, 1);
	open_from(2, 2);		/* another address: its own count */
	CHECK(!is_shut(0, 0) && !is_shut(1, 0) && !is_shut(2, 0));
	open_from(3, 1);
	CHECK(is_shut(0, 100));
	CHECK(guard_head(conn[0]) == -1);	/* a head too late: refused */
	CHECK(!is_shut(1, 0) && !is_shut(3, 0));
	CHECK(guard_head(conn[1]) == 0);	/* complete heads: busy */
	CHECK(guard_head(conn[3]) == 0);
	open_from(4, 1);
	CHECK(is_shut(4, 100));			/* nothing else to close */
	CHECK(!is_shut(1, 0) && !is_shut(3, 0));
	guard_idle(conn[1]);			/* kept alive: waits again */
	open_from(5, 1);
	CHECK(is_shut(1, 100));
	CHECK(!is_shut(3, 0) && !is_shut(5, 0));
	close_all(6);
	guard_stop();

	/* near max_conns (16: room for 15), the longest waiting of all */
	CHECK(guard_room(16) == 15);
	CHECK(guard_room(1) == 0);
	CHECK(start(10000, 10000, 16, 0) == 0);
	for (i = 0; i < 15; i++)
		open_from(i, 10 + i);
	CHECK(guard_head(conn[0]) == 0);	/* the oldest is busy */
	for (i = 0; i < 15; i++)
		CHECK(!is_shut(i, 0));
	open_from(15, 40);
	CHECK(is_shut(1, 100));			/* the oldest waiting one */
	CHECK(!is_shut(0, 0) && !is_shut(2, 0) && !is_shut(15, 0));
	open_from(16, 41);
	CHECK(is_shut(2, 100));
	close_all(17);
	guard_stop();

	/* deadlines: a first head, then a later one on a kept connection */
	CHECK(start(200, 400, 100, 0) == 0);
	open_from(0, 1);
	open_from(1, 1);
	CHECK(guard_head(conn[1]) == 0);
	sleep_ms(100);
	CHECK(!is_shut(0, 0));
	CHECK(is_shut(0, 400));
	CHECK(!is_shut(1, 0));			/* busy: no deadline */
	guard_idle(conn[1]);
	CHECK(!is_shut(1, 250));
	CHECK(is_shut(1, 500));
	close_all(2);
	guard_stop();

	/* stop: waiting ones at once, busy ones once their request is over */
	CHECK(start(10000, 10000, 100, 0) == 0);
	open_from(0, 1);
	open_from(1, 1);
	CHECK(guard_head(conn[1]) == 0);
	guard_drain(60000);		/* a moment old: spared for now */
	CHECK(!is_shut(0, 50));
	guard_drain(0);
	CHECK(is_shut(0, 100));
	CHECK(!is_shut(1, 0));
	guard_idle(conn[1]);
	CHECK(is_shut(1, 100));
	close_all(2);
	guard_stop();
	return UNIT_DONE();
}
