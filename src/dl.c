/*
 * dl.c - load a library and fill its table of functions, once.
 */
#include "dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_mutex_t	mu = PTHREAD_MUTEX_INITIALIZER;

static void
load(struct dl_lib *l)
{
	const struct dl_sym	*s;
	void			*h, *sym;

	if ((h = dlopen(l->file, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		snprintf(l->failure, sizeof(l->failure), "cannot load %s "
		    "(install %s): %s", l->file, l->package, dlerror());
		return;
	}
	for (s = l->syms; s->name != NULL; s++) {
		if ((sym = dlsym(h, s->name)) == NULL) {
			snprintf(l->failure, sizeof(l->failure), "%s has no %s",
			    l->file, s->name);
			return;
		}
		memcpy(s->slot, &sym, sizeof(sym));
	}
}

/* Load l once; 0, or -1 with the reason in err. */
int
dl_load(struct dl_lib *l, char *err, size_t errlen)
{
	int	rc = 0;

	pthread_mutex_lock(&mu);
	if (!l->tried) {
		l->tried = 1;
		load(l);
	}
	if (l->failure[0] != '\0') {
		snprintf(err, errlen, "%s", l->failure);
		rc = -1;
	}
	pthread_mutex_unlock(&mu);
	return rc;
}
