/*
 * pace.c - the pace of sends per business number, shared by every worker
 * process: a table of the numbers' next free times (GCRA: each send
 * reserves the next slot of 1/rate seconds) in one page of memory the
 * supervisor makes (pace_create, before it starts workers) and each
 * worker maps (pace_attach), under a process-shared robust mutex (a
 * worker killed while holding it does not stall the others).  A process
 * without the shared page (an admin script) paces itself alone.
 */
#include "pace.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PACE_NUMBERS	1024	/* numbers paced at once; the idlest go */
#define PACE_KEY	40

struct pace_entry {
	char		 number[PACE_KEY];
	int64_t		 next_ns;	/* the next send may go then */
};

struct pace_page {
	pthread_mutex_t		 mu;
	struct pace_entry	 e[PACE_NUMBERS];
};

static struct pace_page	*page;

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
init_page(struct pace_page *p, int shared)
{
	pthread_mutexattr_t a;

	memset(p, 0, sizeof(*p));
	if (pthread_mutexattr_init(&a) != 0)
		return -1;
	if (shared)
		pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	if (pthread_mutex_init(&p->mu, &a) != 0) {
		pthread_mutexattr_destroy(&a);
		return -1;
	}
	pthread_mutexattr_destroy(&a);
	return 0;
}

/*
 * The supervisor: make the shared page.  Returns its file descriptor
 * (close-on-exec; the workers get a copy), or -1.
 */
int
pace_create(void)
{
	void	*p;
	int	 fd;

	if ((fd = memfd_create("walua-pace", MFD_CLOEXEC)) == -1)
		return -1;
	if (ftruncate(fd, sizeof(struct pace_page)) == -1 ||
	    (p = mmap(NULL, sizeof(struct pace_page), PROT_READ | PROT_WRITE,
	    MAP_SHARED, fd, 0)) == MAP_FAILED) {
		close(fd);
		return -1;
	}
	if (init_page(p, 1) == -1) {
		munmap(p, sizeof(struct pace_page));
		close(fd);
		return -1;
	}
	page = p;
	return fd;
}

/* A worker: map the page fd names.  0 or -1 (then it paces alone). */
int
pace_attach(int fd)
{
	void *p = mmap(NULL, sizeof(struct pace_page), PROT_READ | PROT_WRITE,
	    MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		return -1;
	page = p;
	return 0;
}

static int
lock(void)
{
	int rc = pthread_mutex_lock(&page->mu);

	if (rc == EOWNERDEAD)		/* its holder died: the table holds */
		rc = pthread_mutex_consistent(&page->mu);
	return rc;
}

/*
 * Reserve the next send for number at per_second.  Returns how long to
 * wait before sending (0: now), or -1 when that would be longer than
 * max_wait_ns (nothing reserved then).
 */
int64_t
pace_reserve(const char *number, int per_second, int64_t max_wait_ns)
{
	struct pace_entry	*e, *spot = NULL;
	int64_t			 now = now_ns(), step, at, wait;
	int			 i;

	if (page == NULL) {
		if ((page = malloc(sizeof(*page))) == NULL ||
		    init_page(page, 0) == -1) {
			free(page);
			page = NULL;
			return 0;	/* unpaced rather than unsent */
		}
	}
	if (per_second <= 0 || strlen(number) >= PACE_KEY || lock() != 0)
		return 0;
	step = 1000000000 / per_second;
	for (i = 0; i < PACE_NUMBERS; i++) {
		e = &page->e[i];
		if (strcmp(e->number, number) == 0) {
			spot = e;
			break;
		}
		/* a free entry, or the one whose last send is oldest */
		if (spot == NULL || (spot->number[0] != '\0' &&
		    (e->number[0] == '\0' || e->next_ns < spot->next_ns)))
			spot = e;
	}
	if (strcmp(spot->number, number) != 0) {
		strcpy(spot->number, number);
		spot->next_ns = now;
	}
	at = spot->next_ns > now ? spot->next_ns : now;
	wait = at - now;
	if (wait > max_wait_ns)
		wait = -1;
	else
		spot->next_ns = at + step;
	pthread_mutex_unlock(&page->mu);
	return wait;
}
