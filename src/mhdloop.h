/* mhdloop.h - libmicrohttpd daemons, each run by a thread of walua's. */
#ifndef MHDLOOP_H
#define MHDLOOP_H

#include <stddef.h>

#include "mhd.h"

struct mhdloop;
struct mhdloop_thread;

struct mhdloop	*mhdloop_start(const char *name, unsigned int n, int fd,
		    unsigned int flags, unsigned int max_conns,
		    MHD_AccessHandlerCallback, void *cls, void (*turn)(void),
		    struct MHD_OptionItem *opts, char *err, size_t errlen);
void		 mhdloop_quiesce(struct mhdloop *);
void		 mhdloop_stop(struct mhdloop *);
struct mhdloop_thread *mhdloop_current(void);
void		 mhdloop_wake(struct mhdloop_thread *);
void		 mhdloop_wake_all(struct mhdloop *);
void		 mhdloop_hold(struct mhdloop_thread *);
void		 mhdloop_release(struct mhdloop_thread *);
void		 mhdloop_answered(void);

#endif
