/*
 * decode.c - what decoding a delivery costs, measured alone: event_decode
 * (src/event.c) on a benchmark payload, once with Meta's envelope read in
 * C (src/envelope.c) and once with lua/walua/normalize.lua reading it.
 *
 *   decode PAYLOAD [COUNT]
 *
 * PAYLOAD is one of tests/bench/payload_*.json; its @ID@, @WA@ and @TEXT@
 * are filled in as post.lua does, for 1,000 distinct bodies decoded in
 * turn COUNT (200,000) times each way.  Prints one line:
 *
 *   c US lua US      (CPU µs per body, each way)
 *
 * bench.py runs it pinned to the server's core (RESULTS.md, "Decoding
 * alone").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event.h"

#define NBODIES	1000
#define BODYMAX	4096

static char	 bodies[NBODIES][BODYMAX];
static size_t	 lens[NBODIES];

/* The template with its @NAMES@ filled in for body i. */
static int
fill(const char *tmpl, int i, char *out, size_t size)
{
	static const char *const texts[] = { "menu", "order 4711",
	    "Merhaba, kargom ne zaman gelir?" };
	char		 v[128];
	const char	*p = tmpl, *sub;
	size_t		 n = 0, len;

	while (*p != '\0') {
		sub = NULL;
		if (strncmp(p, "@ID@", 4) == 0) {
			snprintf(v, sizeof(v), "wamid.HBgMOTA1MzIxMjM0NTY3FQIAEh"
			    "ggDEC%08d", i);
			sub = v;
			p += 4;
		} else if (strncmp(p, "@WA@", 4) == 0) {
			snprintf(v, sizeof(v), "9053200%05d", i);
			sub = v;
			p += 4;
		} else if (strncmp(p, "@TEXT@", 6) == 0) {
			sub = texts[i % 3];
			p += 6;
		}
		len = sub != NULL ? strlen(sub) : 1;
		if (n + len + 1 > size)
			return -1;
		memcpy(out + n, sub != NULL ? sub : p++, len);
		n += len;
	}
	out[n] = '\0';
	return (int)n;
}

static double
cpu_s(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU µs per body, decoding count bodies; -1 on a failure. */
static double
run(long count)
{
	struct event_batch	b;
	char			err[256];
	double			t0;
	long			i;

	t0 = cpu_s();
	for (i = 0; i < count; i++) {
		if (event_decode("insider", "/webhooks/insider", NULL,
		    bodies[i % NBODIES], lens[i % NBODIES], &b, err,
		    sizeof(err)) != 0 || b.n != 1) {
			fprintf(stderr, "decode: %s\n", err);
			return -1;
		}
		event_batch_free(&b);
	}
	return (cpu_s() - t0) / (double)count * 1e6;
}

int
main(int argc, char **argv)
{
	FILE	*f;
	char	 tmpl[BODYMAX];
	size_t	 n;
	long	 count = argc > 2 ? atol(argv[2]) : 200000;
	double	 c, lua;
	int	 i, len;

	if (argc < 2 || (f = fopen(argv[1], "rb")) == NULL) {
		fprintf(stderr, "usage: decode PAYLOAD [COUNT]\n");
		return 2;
	}
	n = fread(tmpl, 1, sizeof(tmpl) - 1, f);
	fclose(f);
	while (n > 0 && (tmpl[n - 1] == '\n' || tmpl[n - 1] == ' '))
		n--;
	tmpl[n] = '\0';
	for (i = 0; i < NBODIES; i++) {
		if ((len = fill(tmpl, i, bodies[i], BODYMAX)) == -1) {
			fprintf(stderr, "decode: payload too long\n");
			return 1;
		}
		lens[i] = (size_t)len;
	}
	run(count / 10);		/* the decoder's state, warm */
	event_envelope_in_c = 1;
	c = run(count);
	event_envelope_in_c = 0;
	lua = run(count);
	event_shutdown();
	if (c < 0 || lua < 0)
		return 1;
	printf("c %.2f lua %.2f\n", c, lua);
	return 0;
}
