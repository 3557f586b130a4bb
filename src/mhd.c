/*
 * mhd.c - load libmicrohttpd at run time (see mhd.h for why).
 */
#define MHD_LOADER
#include "mhd.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define MHD_LIBRARY	"libmicrohttpd.so.12"

struct mhd_api		 mhd_api;
static pthread_once_t	 once = PTHREAD_ONCE_INIT;
static char		 failure[256];	/* empty: loaded */

static void
load(void)
{
	void	*h, *sym;

	if ((h = dlopen(MHD_LIBRARY, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		snprintf(failure, sizeof(failure), "cannot load " MHD_LIBRARY
		    " (install libmicrohttpd12): %s", dlerror());
		return;
	}
#define MHD_LOAD(f)							\
	if ((sym = dlsym(h, #f)) == NULL) {				\
		snprintf(failure, sizeof(failure), MHD_LIBRARY		\
		    " has no " #f);					\
		return;							\
	}								\
	memcpy(&mhd_api.f, &sym, sizeof(sym));
	MHD_FUNCS(MHD_LOAD)
#undef MHD_LOAD
}

/* Load libmicrohttpd once; 0, or -1 with the reason in err. */
int
mhd_load(char *err, size_t errlen)
{
	pthread_once(&once, load);
	if (failure[0] == '\0')
		return 0;
	snprintf(err, errlen, "%s", failure);
	return -1;
}
