/*
 * queue.c - the events acknowledged and not yet handled, in memory.
 *
 * HTTP threads push; the supervisor takes, and reports each outcome.  The
 * rule it enforces: events of one conversation are handed out one at a
 * time, in arrival order; a failed event waits for its retry time outside
 * its conversation, so it does not block the events that arrived after it,
 * and rejoins the conversation's tail when due.
 *
 * Each conversation with work is a qconv holding its waiting items; a
 * conversation that is not busy and has items is on the ready list.  An
 * event with no conversation gets a qconv of its own.  All unfinished
 * items are also on one list in arrival order, for the oldest-pending
 * metric, and in a hash by id, so that an event is never held twice (a
 * replay picked up while the same event is already loaded).  One mutex guards everything; the supervisor is woken through an
 * eventfd.
 */
#include "queue.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "strhash.h"

struct qconv {
	char		*key;		/* NULL: a lone event's own */
	struct qitem	*head, *tail;
	int		 busy;		/* one of its events is being handled */
	int		 ready;		/* on the ready list */
	struct qconv	*hnext;		/* hash chain */
	struct qconv	*rnext;		/* ready list */
};

static pthread_mutex_t	 mu = PTHREAD_MUTEX_INITIALIZER;
static struct qconv	**table;
static size_t		 tsize, tcount;
static struct qconv	*ready_head, *ready_tail;
static struct qitem	*retry_list;		/* unsorted; it stays short */
static struct qitem	*all_head, *all_tail;
static struct qitem	**ids;			/* by id: every unfinished item */
static size_t		 idsize, idcount;
static struct queue_stats st;
static int		 wakefd = -1;
static atomic_int	 wake_pending;	/* written, not yet cleared */

int64_t
queue_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t
hash(const char *s)
{
	return (size_t)strhash(s);
}

int
queue_init(void)
{
	tsize = idsize = 1024;
	if ((table = calloc(tsize, sizeof(*table))) == NULL)
		return -1;
	if ((ids = calloc(idsize, sizeof(*ids))) == NULL ||
	    (wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		free(ids);
		free(table);
		ids = NULL;
		table = NULL;
		return -1;
	}
	return 0;
}

static void
item_free(struct qitem *it)
{
	free(it->kind);
	free(it->conv);
	free(it->message_id);
	free(it->status);
	free(it->body);
	free(it->last_error);
	free(it);
}

void
queue_free(void)
{
	struct qitem	*it, *next;
	size_t		 i;
	struct qconv	*c, *cn;

	for (it = all_head; it != NULL; it = next) {
		next = it->all_next;
		item_free(it);
	}
	for (c = ready_head; c != NULL; c = cn) {	/* lone ones first */
		cn = c->rnext;
		if (c->key == NULL)
			free(c);
	}
	for (i = 0; i < tsize; i++)
		for (c = table[i]; c != NULL; c = cn) {
			cn = c->hnext;
			free(c->key);
			free(c);
		}
	free(table);
	table = NULL;
	free(ids);
	ids = NULL;
	idcount = 0;
	all_head = all_tail = NULL;
	ready_head = ready_tail = NULL;
	retry_list = NULL;
	if (wakefd != -1)
		close(wakefd);
	wakefd = -1;
}

int
queue_wake_fd(void)
{
	return wakefd;
}

/*
 * The supervisor, before it looks at the queue: wakes asked for from now
 * on write the eventfd again.  Drained first (one read takes an eventfd's
 * whole count), then cleared: a wake in between finds the flag set and
 * writes nothing, and what it announces is already in the queue the
 * supervisor is about to look at.
 */
void
queue_clear_wake(void)
{
	uint64_t v;

	(void)!read(wakefd, &v, sizeof(v));
	atomic_store(&wake_pending, 0);
}

/*
 * Wake the supervisor's loop (any thread may).  Once per turn of its
 * loop is enough: the writer would otherwise write once per request.
 */
void
queue_wake(void)
{
	uint64_t one = 1;

	if (atomic_exchange(&wake_pending, 1) == 0)
		(void)!write(wakefd, &one, sizeof(one));
}

static void
grow(void)
{
	struct qconv	**nt, *c, *next;
	size_t		 i, ns = tsize * 2;

	if ((nt = calloc(ns, sizeof(*nt))) == NULL)
		return;		/* keep the old table: slower, still right */
	for (i = 0; i < tsize; i++)
		for (c = table[i]; c != NULL; c = next) {
			next = c->hnext;
			c->hnext = nt[hash(c->key) & (ns - 1)];
			nt[hash(c->key) & (ns - 1)] = c;
		}
	free(table);
	table = nt;
	tsize = ns;
}

/* The conversation's qconv, created if needed; NULL when out of memory. */
static struct qconv *
conv_get(const char *key)
{
	struct qconv	*c;
	size_t		 h;

	if (key == NULL)
		return calloc(1, sizeof(struct qconv));
	h = hash(key) & (tsize - 1);
	for (c = table[h]; c != NULL; c = c->hnext)
		if (strcmp(c->key, key) == 0)
			return c;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	if ((c->key = strdup(key)) == NULL) {
		free(c);
		return NULL;
	}
	c->hnext = table[h];
	table[h] = c;
	if (++tcount > tsize)
		grow();
	return c;
}

static void
conv_release(struct qconv *c)
{
	struct qconv	**pp;

	if (c->key == NULL) {
		free(c);
		return;
	}
	for (pp = &table[hash(c->key) & (tsize - 1)]; *pp != NULL;
	    pp = &(*pp)->hnext)
		if (*pp == c) {
			*pp = c->hnext;
			break;
		}
	tcount--;
	free(c->key);
	free(c);
}

static void
make_ready(struct qconv *c)
{
	if (c->busy || c->ready || c->head == NULL)
		return;
	c->ready = 1;
	c->rnext = NULL;
	if (ready_tail != NULL)
		ready_tail->rnext = c;
	else
		ready_head = c;
	ready_tail = c;
}

/* Append it to its conversation; -1 when out of memory. */
static int
enqueue(struct qitem *it)
{
	struct qconv	*c;

	if ((c = conv_get(it->conv)) == NULL)
		return -1;
	it->c = c;
	it->next = NULL;
	if (c->tail != NULL)
		c->tail->next = it;
	else
		c->head = it;
	c->tail = it;
	st.waiting++;
	make_ready(c);
	return 0;
}

/* The unfinished item with this id, or NULL. */
static struct qitem *
id_find(const char *id)
{
	struct qitem	*it;

	for (it = ids[hash(id) & (idsize - 1)]; it != NULL; it = it->idnext)
		if (strcmp(it->id, id) == 0)
			return it;
	return NULL;
}

static void
id_grow(void)
{
	struct qitem	**nt, *it, *next;
	size_t		 i, ns = idsize * 2, h;

	if ((nt = calloc(ns, sizeof(*nt))) == NULL)
		return;		/* keep the old table: slower, still right */
	for (i = 0; i < idsize; i++)
		for (it = ids[i]; it != NULL; it = next) {
			next = it->idnext;
			h = hash(it->id) & (ns - 1);
			it->idnext = nt[h];
			nt[h] = it;
		}
	free(ids);
	ids = nt;
	idsize = ns;
}

static void
id_remove(struct qitem *it)
{
	struct qitem	**pp;

	for (pp = &ids[hash(it->id) & (idsize - 1)]; *pp != NULL;
	    pp = &(*pp)->idnext)
		if (*pp == it) {
			*pp = it->idnext;
			idcount--;
			return;
		}
}

static void
all_unlink(struct qitem *it)
{
	id_remove(it);
	if (it->all_prev != NULL)
		it->all_prev->all_next = it->all_next;
	else
		all_head = it->all_next;
	if (it->all_next != NULL)
		it->all_next->all_prev = it->all_prev;
	else
		all_tail = it->all_prev;
	it->all_prev = it->all_next = NULL;
}

static void
all_append(struct qitem *it)
{
	size_t h = hash(it->id) & (idsize - 1);

	it->idnext = ids[h];
	ids[h] = it;
	if (++idcount > idsize)
		id_grow();
	it->all_prev = all_tail;
	if (all_tail != NULL)
		all_tail->all_next = it;
	else
		all_head = it;
	all_tail = it;
}

/* Move e's strings into it (e keeps its id, loses the rest). */
static void
take_event(struct qitem *it, struct event *e)
{
	memcpy(it->id, e->id, sizeof(it->id));
	it->seq = e->seq;
	it->kind = e->kind;
	it->conv = e->conversation;
	it->message_id = e->message_id;
	it->status = e->status;
	it->body = e->body;
	it->bodylen = e->bodylen;
	it->prior_rank = e->prior_rank;
	it->prior_epoch = e->prior_epoch;
	e->kind = e->conversation = e->message_id = e->status = e->body = NULL;
}

static void
give_back(struct qitem *it, struct event *e)
{
	e->kind = it->kind;
	e->conversation = it->conv;
	e->message_id = it->message_id;
	e->status = it->status;
	e->body = it->body;
	it->kind = it->conv = it->message_id = it->status = it->body = NULL;
}

/*
 * Take ownership of every event of b (b is left empty) and queue them.
 * Returns 0, or -1 without taking anything when the queue would hold more
 * than max_queue unfinished events or memory runs out.
 */
int
queue_push(struct event_batch *b, long max_queue)
{
	struct qitem	**items;
	int		 i, rc = -1;
	int64_t		 now = queue_now_ms();

	if ((items = calloc((size_t)b->n + 1, sizeof(*items))) == NULL)
		return -1;
	for (i = 0; i < b->n; i++)
		if ((items[i] = calloc(1, sizeof(**items))) == NULL)
			goto out;
	pthread_mutex_lock(&mu);
	if (st.waiting + st.retrying + st.inflight + b->n > max_queue) {
		pthread_mutex_unlock(&mu);
		goto out;
	}
	for (i = 0; i < b->n; i++) {
		struct qitem *it = items[i];

		memcpy(it->id, b->ev[i].id, sizeof(it->id));
		take_event(it, &b->ev[i]);
		it->acked_ms = now;
		if (enqueue(it) == -1) {
			/* cannot happen without OOM; keep what is queued */
			give_back(it, &b->ev[i]);
			continue;
		}
		items[i] = NULL;
		all_append(it);
	}
	pthread_mutex_unlock(&mu);
	queue_wake();
	rc = 0;
out:
	for (i = 0; i < b->n; i++)
		free(items[i]);
	free(items);
	if (rc == 0)
		event_batch_free(b);
	return rc;
}

/* The next event to handle, its conversation now busy; or NULL. */
struct qitem *
queue_take(void)
{
	struct qconv	*c;
	struct qitem	*it;

	pthread_mutex_lock(&mu);
	if ((c = ready_head) == NULL) {
		pthread_mutex_unlock(&mu);
		return NULL;
	}
	ready_head = c->rnext;
	if (ready_head == NULL)
		ready_tail = NULL;
	c->ready = 0;
	it = c->head;
	c->head = it->next;
	if (c->head == NULL)
		c->tail = NULL;
	c->busy = 1;
	it->next = NULL;
	it->attempts++;
	st.waiting--;
	st.inflight++;
	pthread_mutex_unlock(&mu);
	return it;
}

/* Free the conversation of a finished item, or let its next event go. */
static void
conv_finish(struct qitem *it)
{
	struct qconv *c = it->c;

	it->c = NULL;
	c->busy = 0;
	if (c->head != NULL)
		make_ready(c);
	else
		conv_release(c);
	st.inflight--;
}

void
queue_done(struct qitem *it)
{
	pthread_mutex_lock(&mu);
	conv_finish(it);
	all_unlink(it);
	pthread_mutex_unlock(&mu);
	item_free(it);
}

/*
 * it did not run to its end, through no fault of its own (its worker was
 * stopped for another event): hand it out again first in its
 * conversation, its attempt not counted.
 */
void
queue_giveback(struct qitem *it)
{
	struct qconv *c = it->c;

	pthread_mutex_lock(&mu);
	it->attempts--;
	c->busy = 0;
	it->next = c->head;
	c->head = it;
	if (c->tail == NULL)
		c->tail = it;
	st.inflight--;
	st.waiting++;
	make_ready(c);
	pthread_mutex_unlock(&mu);
	queue_wake();
}

/* it failed; hand it out again at due_ms, after what arrived meanwhile. */
void
queue_retry(struct qitem *it, int64_t due_ms)
{
	pthread_mutex_lock(&mu);
	conv_finish(it);
	it->due_ms = due_ms;
	it->next = retry_list;
	retry_list = it;
	st.retrying++;
	pthread_mutex_unlock(&mu);
}

/* it failed for the last time (the inbox keeps it as a dead letter). */
void
queue_dead(struct qitem *it)
{
	pthread_mutex_lock(&mu);
	conv_finish(it);
	all_unlink(it);
	st.dead++;
	pthread_mutex_unlock(&mu);
	item_free(it);
}

/*
 * Queue one event loaded from the inbox (at start, or replayed), taking
 * e's strings: handed out now, or at due_ms (monotonic) if later.
 * Returns 0, 1 when an event of that id is already held (e is left as it
 * was: an event runs once however often it is loaded), or -1 when out of
 * memory.
 */
int
queue_restore(struct event *e, int attempts, int64_t due_ms)
{
	struct qitem	*it;
	int64_t		 now = queue_now_ms();

	if ((it = calloc(1, sizeof(*it))) == NULL)
		return -1;
	pthread_mutex_lock(&mu);
	if (id_find(e->id) != NULL) {
		pthread_mutex_unlock(&mu);
		free(it);
		return 1;
	}
	take_event(it, e);
	it->attempts = attempts;
	it->acked_ms = now;
	if (due_ms > now) {
		it->due_ms = due_ms;
		it->next = retry_list;
		retry_list = it;
		st.retrying++;
	} else if (enqueue(it) == -1) {
		give_back(it, e);
		pthread_mutex_unlock(&mu);
		free(it);
		return -1;
	}
	all_append(it);
	pthread_mutex_unlock(&mu);
	queue_wake();
	return 0;
}

/* Events acknowledged and not finished: waiting, retrying or in flight. */
long
queue_unfinished(void)
{
	long n;

	pthread_mutex_lock(&mu);
	n = st.waiting + st.retrying + st.inflight;
	pthread_mutex_unlock(&mu);
	return n;
}

/*
 * Move the retries that are due back into their conversations.  Returns
 * the time of the next retry, or -1 when none is waiting.
 */
int64_t
queue_tick(int64_t now)
{
	struct qitem	**pp, *it;
	int64_t		 next = -1;

	pthread_mutex_lock(&mu);
	for (pp = &retry_list; (it = *pp) != NULL; ) {
		if (it->due_ms <= now) {
			*pp = it->next;
			st.retrying--;
			if (enqueue(it) == -1) {	/* OOM: try next tick */
				it->next = retry_list;
				retry_list = it;
				st.retrying++;
				break;
			}
			continue;
		}
		if (next == -1 || it->due_ms < next)
			next = it->due_ms;
		pp = &it->next;
	}
	pthread_mutex_unlock(&mu);
	return next;
}

void
queue_stats(struct queue_stats *out)
{
	pthread_mutex_lock(&mu);
	*out = st;
	out->oldest_ms = all_head != NULL ? all_head->acked_ms : 0;
	pthread_mutex_unlock(&mu);
}
