/*
 * pq.c - load libpq at run time (see pq.h for why).
 */
#define PQ_LOADER
#include "pq.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define PQ_LIBRARY	"libpq.so.5"

struct pq_api		 pq_api;
static pthread_once_t	 once = PTHREAD_ONCE_INIT;
static char		 failure[256];	/* empty: loaded */

static void
load(void)
{
	void	*h, *sym;

	if ((h = dlopen(PQ_LIBRARY, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		snprintf(failure, sizeof(failure), "PostgreSQL: cannot load "
		    PQ_LIBRARY " (install libpq5): %s", dlerror());
		return;
	}
#define PQ_LOAD(f)							\
	if ((sym = dlsym(h, #f)) == NULL) {				\
		snprintf(failure, sizeof(failure), "PostgreSQL: "	\
		    PQ_LIBRARY " has no " #f);				\
		return;							\
	}								\
	memcpy(&pq_api.f, &sym, sizeof(sym));
	PQ_FUNCS(PQ_LOAD)
#undef PQ_LOAD
}

/* Load libpq once; 0, or -1 with the reason in err. */
int
pq_load(char *err, size_t errlen)
{
	pthread_once(&once, load);
	if (failure[0] == '\0')
		return 0;
	snprintf(err, errlen, "%s", failure);
	return -1;
}
