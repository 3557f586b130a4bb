/*
 * mhdloop.c - libmicrohttpd daemons, each run by a thread of walua's
 * (MHD_run_wait) on a listening socket they share.
 *
 * Why not libmicrohttpd's own threads: the only way it has to stop
 * accepting while they run, MHD_quiesce_daemon(), races with them in
 * 0.9.75 (the caller and the polling thread both take the listening
 * socket out of the epoll set, without a lock, and the one that comes
 * second aborts the process: "Failed to remove listen FD from epoll
 * set").  walua stops accepting on every stop and every upgrade.  Here
 * each daemon is quiesced by the thread that runs it, between two turns
 * of its loop, so nothing else touches it then.  The socket stays open in
 * whatever process shares it (the new binary of an upgrade), where the
 * kernel queues connections.
 *
 * A thread waits inside libmicrohttpd (MHD_run_wait: its epoll_wait),
 * which has no way of its own to be woken from another thread when it
 * runs no thread itself: a delivery whose commit the inbox writer has
 * finished, or a stop, would wait for the next network event.  So each
 * daemon's epoll set also holds an eventfd of ours, with the data
 * pointer libmicrohttpd skips (NULL): writing it makes the wait return,
 * and the next turn of the loop answers what was committed.  A flag
 * keeps it to one write per wait, however many deliveries a group
 * commit finishes.
 *
 * A delivery waiting for its commit is not suspended (libmicrohttpd
 * 0.9.75 takes a suspended connection out of its epoll set and puts it
 * back, two epoll_ctl calls and an empty recv per request, about a tenth
 * of the CPU walua spends on an event).  Its handler returns without an
 * answer: the connection stays in libmicrohttpd's list of ready
 * connections, and its handler is called again on every turn until it
 * answers.  libmicrohttpd does not wait while such a connection exists,
 * so while a thread holds one (mhdloop_hold) the loop waits itself, with
 * poll() on libmicrohttpd's epoll descriptor (which takes no event away
 * from it), after each turn that queued no answer (mhdloop_answered: an
 * answer is written on the next turn).
 *
 * Each daemon takes an equal share of the connections (like
 * libmicrohttpd's own thread pool, whose threads also share one socket):
 * a daemon at its share leaves new connections to the others, or in the
 * listen backlog.
 */
#include "mhdloop.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

enum { L_RUN, L_QUIESCE, L_EXIT };

/*
 * The longest a thread holding deliveries waits in poll(): libmicrohttpd's
 * connection timeouts are seen at this granularity meanwhile.
 */
#define HOLD_WAIT_MS	1000

struct mhdloop_thread {
	struct mhdloop		*m;
	struct MHD_Daemon	*d;
	pthread_t		 t;
	int			 wakefd;	/* eventfd in d's epoll set */
	int			 woken;		/* atomic: wakefd was written */
	int			 epfd;		/* d's epoll set */
	int			 holds;		/* the loop's: deliveries waiting */
	int			 answered;	/* the loop's: this turn */
};

struct mhdloop {
	char			 name[16];	/* its threads' (top -H) */
	unsigned int		 n;		/* daemons */
	unsigned int		 running;	/* threads: th[0..running-1] */
	struct mhdloop_thread	*th;
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;
	int			 want;		/* L_*: atomic */
	unsigned int		 done;		/* threads that did it; mu */
	void			(*turn)(void);	/* after each wait, or NULL */
};

static __thread struct mhdloop_thread *self;	/* the loop thread's own */

/* Make t's wait return (from any thread); a wake not yet taken in does. */
static void
wake(struct mhdloop_thread *t)
{
	uint64_t	one = 1;

	if (__atomic_exchange_n(&t->woken, 1, __ATOMIC_SEQ_CST) == 0)
		(void)!write(t->wakefd, &one, sizeof(one));
}

/* The loop thread calling, or NULL: for mhdloop_resume later. */
struct mhdloop_thread *
mhdloop_current(void)
{
	return self;
}

/* Make t run a turn (from any thread): a commit t waits for is over. */
void
mhdloop_wake(struct mhdloop_thread *t)
{
	wake(t);
}

/* Every thread of m runs a turn. */
void
mhdloop_wake_all(struct mhdloop *m)
{
	unsigned int	i;

	for (i = 0; i < m->running; i++)
		wake(&m->th[i]);
}

/*
 * From the loop's own thread (or libmicrohttpd's stop, once the thread
 * is gone): a connection of t waits for its commit without an answer,
 * or no longer does.
 */
void
mhdloop_hold(struct mhdloop_thread *t)
{
	t->holds++;
}

void
mhdloop_release(struct mhdloop_thread *t)
{
	t->holds--;
}

/* From a handler: this turn queued an answer; run the next one now. */
void
mhdloop_answered(void)
{
	if (self != NULL)
		self->answered = 1;
}

static void *
loop_main(void *arg)
{
	struct mhdloop_thread	*t = arg;
	struct mhdloop		*m = t->m;
	int			 did = L_RUN, want;
	uint64_t		 v;
	MHD_socket		 fd;
	struct pollfd		 pfd;

	self = t;
	pthread_setname_np(pthread_self(), m->name);
	for (;;) {
		/* drained before the flag is cleared: a wake after the clear
		 * writes again, one before it is seen by the turn below */
		if (__atomic_load_n(&t->woken, __ATOMIC_SEQ_CST)) {
			(void)!read(t->wakefd, &v, sizeof(v));
			__atomic_store_n(&t->woken, 0, __ATOMIC_SEQ_CST);
		}
		want = __atomic_load_n(&m->want, __ATOMIC_SEQ_CST);
		if (want != did) {
			/* the socket is the loop's to close: the daemon has
			 * a copy of its own (mhdloop_start) */
			if (did == L_RUN && (fd = MHD_quiesce_daemon(t->d)) !=
			    MHD_INVALID_SOCKET)
				close(fd);
			did = want;
			pthread_mutex_lock(&m->mu);
			m->done++;
			pthread_cond_broadcast(&m->cv);
			pthread_mutex_unlock(&m->mu);
			if (did == L_EXIT)
				break;
		}
		t->answered = 0;
		/* returns on a connection's event, a timeout or a wake */
		(void)MHD_run_wait(t->d, t->holds > 0 ? 0 : -1);
		if (m->turn != NULL)
			m->turn();
		/* see the comment at the top: waits libmicrohttpd would not */
		if (t->holds > 0 && !t->answered) {
			pfd.fd = t->epfd;
			pfd.events = POLLIN;
			(void)poll(&pfd, 1, HOLD_WAIT_MS);
		}
	}
	return NULL;
}

/* Ask every thread for `want` and wait until each has done it. */
static void
tell(struct mhdloop *m, int want)
{
	unsigned int	i;

	pthread_mutex_lock(&m->mu);
	m->done = 0;
	__atomic_store_n(&m->want, want, __ATOMIC_SEQ_CST);
	for (i = 0; i < m->running; i++)
		wake(&m->th[i]);
	while (m->done < m->running)
		pthread_cond_wait(&m->cv, &m->mu);
	pthread_mutex_unlock(&m->mu);
}

/* Stop and free what mhdloop_start made of m so far. */
static void
undo(struct mhdloop *m)
{
	unsigned int	i;

	/* every thread started was told L_EXIT by tell() */
	for (i = 0; i < m->running; i++)
		pthread_join(m->th[i].t, NULL);
	for (i = 0; i < m->n; i++) {
		if (m->th[i].d != NULL)
			MHD_stop_daemon(m->th[i].d);
		if (m->th[i].wakefd != -1)
			close(m->th[i].wakefd);
	}
	pthread_cond_destroy(&m->cv);
	pthread_mutex_destroy(&m->mu);
	free(m->th);
	free(m);
}

/*
 * Start n daemons (flags without MHD_USE_INTERNAL_POLLING_THREAD) that
 * share the listening socket fd (which stays the caller's) and
 * max_conns, each with the options opts (up to MHD_OPTION_END) and a
 * thread named name, which calls turn (unless NULL) each time its daemon
 * has handled what was ready.  Returns the loop, or NULL with the reason
 * in err.
 */
struct mhdloop *
mhdloop_start(const char *name, unsigned int n, int fd, unsigned int flags,
    unsigned int max_conns, MHD_AccessHandlerCallback dh, void *cls,
    void (*turn)(void), struct MHD_OptionItem *opts, char *err,
    size_t errlen)
{
	const union MHD_DaemonInfo *di;
	struct epoll_event	 ev;
	struct mhdloop		*m;
	struct mhdloop_thread	*t;
	unsigned int		 i, share;
	int			 lfd, rc;

	if ((m = calloc(1, sizeof(*m))) == NULL ||
	    (m->th = calloc(n, sizeof(*m->th))) == NULL) {
		free(m);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->n = n;
	m->turn = turn;
	pthread_mutex_init(&m->mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	for (i = 0; i < n; i++)
		m->th[i].wakefd = -1;
	for (i = 0; i < n; i++) {
		t = &m->th[i];
		t->m = m;
		share = max_conns / n + (i < max_conns % n ? 1 : 0);
		/* a copy per daemon: each closes its own on quiesce */
		if ((lfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) == -1) {
			snprintf(err, errlen, "%s: %s", name, strerror(errno));
			goto fail;
		}
		/* opts first: its logger must come before anything to log */
		t->d = MHD_start_daemon(flags, 0, NULL, NULL, dh, cls,
		    MHD_OPTION_ARRAY, opts,
		    MHD_OPTION_LISTEN_SOCKET, lfd,
		    MHD_OPTION_CONNECTION_LIMIT, share > 0 ? share : 1,
		    MHD_OPTION_END);
		if (t->d == NULL) {
			/* lfd not closed: libmicrohttpd closes it on most of
			 * its failures, and a descriptor closed twice may be
			 * another thread's by then */
			snprintf(err, errlen, "%s: libmicrohttpd did not start",
			    name);
			goto fail;
		}
		/* NULL: an event libmicrohttpd passes over */
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN;
		ev.data.ptr = NULL;
		if ((di = MHD_get_daemon_info(t->d,
		    MHD_DAEMON_INFO_EPOLL_FD)) == NULL ||
		    (t->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1 ||
		    epoll_ctl(di->epoll_fd, EPOLL_CTL_ADD, t->wakefd,
		    &ev) == -1) {
			snprintf(err, errlen, "%s: cannot wake its thread: %s",
			    name, strerror(errno));
			goto fail;
		}
		t->epfd = di->epoll_fd;
		if ((rc = pthread_create(&t->t, NULL, loop_main, t)) != 0) {
			snprintf(err, errlen, "%s: pthread_create: %s", name,
			    strerror(rc));
			goto fail;
		}
		m->running++;
	}
	return m;
fail:
	tell(m, L_EXIT);
	undo(m);
	return NULL;
}

/*
 * Stop accepting: returns once every daemon has closed its copy of the
 * socket.  Connections open go on being served.
 */
void
mhdloop_quiesce(struct mhdloop *m)
{
	if (m != NULL && __atomic_load_n(&m->want, __ATOMIC_ACQUIRE) ==
	    L_RUN)
		tell(m, L_QUIESCE);
}

/* End the threads, then the daemons (closing what is still open). */
void
mhdloop_stop(struct mhdloop *m)
{
	if (m == NULL)
		return;
	tell(m, L_EXIT);
	undo(m);
}
