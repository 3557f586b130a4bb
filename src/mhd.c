/*
 * mhd.c - load libmicrohttpd at run time (see mhd.h for why).
 */
#define MHD_LOADER
#include "mhd.h"

#include "dl.h"

struct mhd_api		 mhd_api;

static const struct dl_sym syms[] = {
#define MHD_SYM(f)	{ #f, &mhd_api.f },
	MHD_FUNCS(MHD_SYM)
#undef MHD_SYM
	{ NULL, NULL }
};

static struct dl_lib	 lib = { "libmicrohttpd.so.12", "libmicrohttpd12",
			    syms, 0, "" };

/* Load libmicrohttpd once; 0, or -1 with the reason in err. */
int
mhd_load(char *err, size_t errlen)
{
	return dl_load(&lib, err, errlen);
}
