/*
 * pq.c - load libpq at run time (see pq.h for why).
 */
#define PQ_LOADER
#include "pq.h"

#include "dl.h"

struct pq_api		 pq_api;

static const struct dl_sym syms[] = {
#define PQ_SYM(f)	{ #f, &pq_api.f },
	PQ_FUNCS(PQ_SYM)
#undef PQ_SYM
	{ NULL, NULL }
};

static struct dl_lib	 lib = { "libpq.so.5", "libpq5", syms, 0, "" };

/* Load libpq once; 0, or -1 with the reason in err. */
int
pq_load(char *err, size_t errlen)
{
	return dl_load(&lib, err, errlen);
}
