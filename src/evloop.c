/*
 * evloop.c - the event loop of a worker process: the supervisor's socket
 * and libcurl's sockets through epoll, and timers (handler deadlines,
 * walua.sleep, libcurl's own) in a binary heap.  One per process, run by
 * its only thread; the watchers and timers are embedded in their owners,
 * so arming one allocates nothing (the heap grows, rarely).
 */
#include "evloop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define EVLOOP_BATCH	64	/* events taken per epoll_wait */

static int			 epfd = -1;
static struct evloop_timer	**heap;
static int			 nheap, heapcap;

int64_t
evloop_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
evloop_init(void)
{
	if ((epfd = epoll_create1(EPOLL_CLOEXEC)) == -1)
		return -1;
	return 0;
}

void
evloop_free(void)
{
	if (epfd != -1)
		close(epfd);
	epfd = -1;
	free(heap);
	heap = NULL;
	nheap = heapcap = 0;
}

/*
 * Watch w->fd for events (EVLOOP_IN | EVLOOP_OUT), or change what it is
 * watched for.  Returns 0 or -1.
 */
int
evloop_watch(struct evloop_fd *w, unsigned events)
{
	struct epoll_event ev = { 0, { 0 } };

	ev.events = ((events & EVLOOP_IN) ? EPOLLIN : 0) |
	    ((events & EVLOOP_OUT) ? EPOLLOUT : 0);
	ev.data.ptr = w;
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, w->fd, &ev) == 0)
		return 0;
	if (errno != ENOENT)
		return -1;
	return epoll_ctl(epfd, EPOLL_CTL_ADD, w->fd, &ev);
}

void
evloop_unwatch(struct evloop_fd *w)
{
	(void)epoll_ctl(epfd, EPOLL_CTL_DEL, w->fd, NULL);
}

static void
heap_set(int i, struct evloop_timer *t)
{
	heap[i] = t;
	t->index = i;
}

static void
sift_up(int i)
{
	struct evloop_timer *t = heap[i];

	while (i > 0 && heap[(i - 1) / 2]->when_ms > t->when_ms) {
		heap_set(i, heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(i, t);
}

static void
sift_down(int i)
{
	struct evloop_timer	*t = heap[i];
	int			 c;

	for (;;) {
		c = 2 * i + 1;
		if (c >= nheap)
			break;
		if (c + 1 < nheap && heap[c + 1]->when_ms < heap[c]->when_ms)
			c++;
		if (heap[c]->when_ms >= t->when_ms)
			break;
		heap_set(i, heap[c]);
		i = c;
	}
	heap_set(i, t);
}

/*
 * Arm t for when_ms (evloop_now_ms's clock), re-arming it if it was.
 * Its callback runs once, from evloop_run_once.  Returns 0 or -1 (no
 * memory: t is not armed).
 */
int
evloop_timer_start(struct evloop_timer *t, int64_t when_ms)
{
	struct evloop_timer **nh;

	if (evloop_timer_armed(t))
		evloop_timer_stop(t);
	if (nheap == heapcap) {
		int n = heapcap ? heapcap * 2 : 64;

		if ((nh = realloc(heap, (size_t)n * sizeof(*nh))) == NULL)
			return -1;
		heap = nh;
		heapcap = n;
	}
	t->when_ms = when_ms;
	heap_set(nheap++, t);
	sift_up(t->index);
	return 0;
}

int
evloop_timer_armed(const struct evloop_timer *t)
{
	return t->index >= 0 && t->index < nheap && heap[t->index] == t;
}

void
evloop_timer_stop(struct evloop_timer *t)
{
	int i = t->index;

	if (!evloop_timer_armed(t))
		return;
	t->index = -1;
	if (i == --nheap)
		return;
	heap_set(i, heap[nheap]);
	sift_down(i);
	sift_up(heap[i]->index);
}

/*
 * Wait for file descriptors (at most max_wait_ms, less when a timer is
 * due sooner), run their callbacks, then every timer that is due.
 * Returns the number of callbacks run, or -1 when epoll fails.
 */
int
evloop_run_once(int64_t max_wait_ms)
{
	struct epoll_event	 evs[EVLOOP_BATCH];
	struct evloop_timer	*t;
	struct evloop_fd	*w;
	int64_t			 now = evloop_now_ms(), wait = max_wait_ms;
	unsigned		 e;
	int			 n, i, ran = 0;

	if (nheap > 0 && heap[0]->when_ms - now < wait)
		wait = heap[0]->when_ms > now ? heap[0]->when_ms - now : 0;
	if (wait < 0)
		wait = 0;
	n = epoll_wait(epfd, evs, EVLOOP_BATCH, (int)(wait > 60000 ? 60000 :
	    wait));
	if (n == -1 && errno != EINTR)
		return -1;
	for (i = 0; i < n; i++) {
		w = evs[i].data.ptr;
		e = ((evs[i].events & EPOLLIN) ? EVLOOP_IN : 0) |
		    ((evs[i].events & EPOLLOUT) ? EVLOOP_OUT : 0) |
		    ((evs[i].events & (EPOLLERR | EPOLLHUP)) ? EVLOOP_ERR : 0);
		w->cb(w, e);
		ran++;
	}
	now = evloop_now_ms();
	while (nheap > 0 && heap[0]->when_ms <= now) {
		t = heap[0];
		evloop_timer_stop(t);
		t->cb(t);
		ran++;
	}
	return ran;
}
