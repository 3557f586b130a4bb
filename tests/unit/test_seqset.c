/*
 * test_seqset.c - the inbox writer's set of events not yet handled: its
 * smallest seq is where the next start reads pending events from, so a
 * smallest that is too high would lose events.  Checked against a plain
 * array under random adds (mostly increasing, some back below the end)
 * and deletes (mostly from the front, some anywhere; for a while the
 * front one stays, as an event retrying does, and the rest go behind it).
 */
#include <stdlib.h>

#include "seqset.h"

#include "unit.h"

#define MAXSEQ	100000

static unsigned char	in[MAXSEQ];
static long long	lo;		/* nothing in the model below it */

/* The smallest seq in the model, or -1. */
static long long
model_min(void)
{
	for (; lo < MAXSEQ; lo++)
		if (in[lo])
			return lo;
	return -1;
}

static void
model_add(long long seq)
{
	in[seq] = 1;
	if (seq < lo)
		lo = seq;
}

static size_t
model_count(void)
{
	size_t	i, n = 0;

	for (i = 0; i < MAXSEQ; i++)
		n += in[i];
	return n;
}

int
main(void)
{
	struct seqset	s = { 0 };
	long long	next = 1, seq, min;
	int		i, bad_min = 0, bad_count = 0, bad_add = 0, has;

	/* the simple cases */
	CHECK(seqset_min(&s, &min) == 0);
	CHECK(seqset_add(&s, 5) == 0 && seqset_add(&s, 7) == 0);
	CHECK(seqset_add(&s, 6) == 0 && seqset_add(&s, 6) == 0);
	CHECK(seqset_min(&s, &min) == 1 && min == 5);
	CHECK(seqset_count(&s) == 3);
	seqset_del(&s, 5);
	CHECK(seqset_min(&s, &min) == 1 && min == 6);
	seqset_del(&s, 7);
	seqset_del(&s, 99);		/* not there: nothing */
	CHECK(seqset_min(&s, &min) == 1 && min == 6);
	CHECK(seqset_count(&s) == 1);
	CHECK(seqset_add(&s, 7) == 0);	/* gone, then back */
	seqset_del(&s, 6);
	CHECK(seqset_min(&s, &min) == 1 && min == 7);
	CHECK(seqset_add(&s, 2) == 0);	/* below the front */
	CHECK(seqset_min(&s, &min) == 1 && min == 2);
	seqset_del(&s, 2);
	seqset_del(&s, 7);
	CHECK(seqset_min(&s, &min) == 0 && seqset_count(&s) == 0);
	seqset_free(&s);

	/* against the model */
	srand(7);
	for (i = 0; i < 400000; i++) {
		int r = rand() % 100;

		if (r < 40 && next < MAXSEQ) {		/* a new event */
			seq = next++;
			bad_add += seqset_add(&s, seq) != 0;
			model_add(seq);
		} else if (r < 42 && next > 1) {	/* a replay */
			seq = 1 + rand() % (next - 1);
			bad_add += seqset_add(&s, seq) != 0;
			model_add(seq);
		} else if (r < 92) {			/* handled in order */
			if ((seq = model_min()) >= 0 && (i / 5000) % 2) {
				/* the oldest is stuck (retrying): the next */
				for (seq++; seq < next && !in[seq]; seq++)
					;
				if (seq == next)
					seq = -1;
			}
			if (seq >= 0) {
				seqset_del(&s, seq);
				in[seq] = 0;
			}
		} else if (next > 1) {			/* out of order */
			seq = 1 + rand() % (next - 1);
			seqset_del(&s, seq);
			in[seq] = 0;
		}
		if (next >= MAXSEQ && model_min() < 0)
			break;
		has = seqset_min(&s, &min);
		if (has != (model_min() >= 0) || (has && min != model_min()))
			bad_min++;
		if (i % 97 == 0 && seqset_count(&s) != model_count())
			bad_count++;
	}
	CHECK(bad_add == 0);
	CHECK(bad_min == 0);
	CHECK(bad_count == 0);
	printf("seqset: %d steps, %lld seqs, %zu left\n", i, next - 1,
	    seqset_count(&s));
	seqset_free(&s);
	return UNIT_DONE();
}
