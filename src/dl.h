/*
 * dl.h - a library loaded at run time, by the processes that use it
 * (src/pq.h, src/mhd.h say why), and the functions walua calls in it.
 */
#ifndef DL_H
#define DL_H

#include <stddef.h>

struct dl_sym {
	const char	*name;
	void		*slot;		/* where its address goes: a function
					 * pointer of the library's table */
};

struct dl_lib {
	const char		*file;		/* "libpq.so.5" */
	const char		*package;	/* Debian's, for the message */
	const struct dl_sym	*syms;		/* up to a NULL name */
	int			 tried;
	char			 failure[256];	/* empty: loaded */
};

int	dl_load(struct dl_lib *, char *err, size_t errlen);

#endif
