/*
 * test_queue.c - the dispatch rules: one event per conversation at a
 * time, arrival order, retries after what arrived meanwhile, capacity.
 */
#include "queue.h"

#include <stdlib.h>

#include "unit.h"

/* Push one event for conversation conv (NULL: none) with text id. */
static int
push(const char *conv, const char *id, long max)
{
	struct event_batch	b;

	b.n = 1;
	b.ev = calloc(1, sizeof(*b.ev));
	snprintf(b.ev[0].id, sizeof(b.ev[0].id), "%s", id);
	b.ev[0].kind = strdup("message");
	b.ev[0].conversation = conv ? strdup(conv) : NULL;
	b.ev[0].body = strdup("{}");
	b.ev[0].bodylen = 2;
	if (queue_push(&b, max) == -1) {
		event_batch_free(&b);
		return -1;
	}
	return 0;
}

/* Load event id as the inbox does at start or on a replay. */
static int
restore(const char *id)
{
	struct event	e;
	int		rc;

	memset(&e, 0, sizeof(e));
	snprintf(e.id, sizeof(e.id), "%s", id);
	e.kind = strdup("message");
	e.conversation = strdup("r");
	e.body = strdup("{}");
	e.bodylen = 2;
	rc = queue_restore(&e, 0, 0);
	event_free(&e);
	return rc;
}

int
main(void)
{
	struct qitem		*a, *b, *c, *d;
	struct queue_stats	 st;

	CHECK(queue_init() == 0);
	CHECK(push("c1", "a1", 100) == 0);
	CHECK(push("c1", "a2", 100) == 0);
	CHECK(push("c2", "b1", 100) == 0);
	CHECK(push(NULL, "n1", 100) == 0);

	/* first of c1, then c2 (c1 busy), then the lone one, then nothing */
	a = queue_take();
	b = queue_take();
	c = queue_take();
	d = queue_take();
	CHECK(a != NULL && strcmp(a->id, "a1") == 0);
	CHECK(b != NULL && strcmp(b->id, "b1") == 0);
	CHECK(c != NULL && strcmp(c->id, "n1") == 0);
	CHECK(d == NULL);
	queue_stats(&st);
	CHECK(st.inflight == 3 && st.waiting == 1);

	/* a1 fails: a2 goes first, a1 rejoins the tail when due */
	queue_retry(a, 1000);
	CHECK(push("c1", "a3", 100) == 0);
	a = queue_take();
	CHECK(a != NULL && strcmp(a->id, "a2") == 0);
	CHECK(queue_take() == NULL);
	CHECK(queue_tick(500) == 1000);		/* not due yet */
	queue_done(a);
	a = queue_take();
	CHECK(a != NULL && strcmp(a->id, "a3") == 0);
	CHECK(queue_tick(1000) == -1);		/* a1 back, behind a3 */
	CHECK(queue_take() == NULL);		/* c1 busy with a3 */
	queue_done(a);
	a = queue_take();
	CHECK(a != NULL && strcmp(a->id, "a1") == 0 && a->attempts == 2);
	queue_dead(a);
	queue_done(b);
	queue_done(c);
	queue_stats(&st);
	CHECK(st.inflight == 0 && st.waiting == 0 && st.retrying == 0);
	CHECK(st.dead == 1);

	/* capacity counts waiting, retrying and in-flight events */
	CHECK(push("x", "x1", 2) == 0);
	CHECK(push("x", "x2", 2) == 0);
	CHECK(push("x", "x3", 2) == -1);
	a = queue_take();
	CHECK(push("y", "y1", 2) == -1);
	queue_done(a);
	CHECK(push("y", "y1", 2) == 0);
	queue_stats(&st);
	CHECK(st.oldest_ms != 0);

	/* an event loaded while it is still held is refused, not doubled;
	 * once finished, it may be loaded again (a later replay) */
	a = queue_take();
	b = queue_take();
	CHECK(a != NULL && strcmp(a->id, "x2") == 0);
	CHECK(b != NULL && strcmp(b->id, "y1") == 0);
	queue_done(b);
	CHECK(restore("x2") == 1);		/* in flight */
	queue_retry(a, 10);
	CHECK(restore("x2") == 1);		/* waiting for its retry */
	CHECK(queue_tick(10) == -1);
	CHECK(restore("x2") == 1);		/* waiting in its conversation */
	a = queue_take();
	CHECK(a != NULL && strcmp(a->id, "x2") == 0);
	queue_done(a);
	CHECK(restore("x2") == 0);		/* finished: a replay runs it */
	a = queue_take();
	CHECK(a != NULL && strcmp(a->id, "x2") == 0 && a->attempts == 1);
	queue_done(a);
	queue_stats(&st);
	CHECK(st.inflight == 0 && st.waiting == 0 && st.retrying == 0);
	queue_free();
	return UNIT_DONE();
}
