/* envelope.h - Meta's webhook envelope read in C, from cjson's tables. */
#ifndef ENVELOPE_H
#define ENVELOPE_H

#include <lua.h>

#include "buf.h"
#include "event.h"

/*
 * Read the decoded body at idx, a delivery from provider to endpoint
 * (Kapso's are always left to normalize.lua), into out: each event's
 * kind, conversation, dedup key, message id, status and packed table (ids are the caller's; a dedup key is NULL
 * when the event has no natural one).  b is scratch space the caller
 * frees.  Returns 1 when it read the body; 0 when the body is not in the
 * usual shape (see envelope.c) and normalize.lua must read it; -1 when
 * memory ran out; out is empty unless it returns 1.  Lua raises when its
 * own memory runs out: call it protected, and free out after a raise
 * (out->n counts what it holds).
 */
int	envelope_read(lua_State *, int idx, const char *provider,
	    const char *endpoint, struct event_batch *out, struct buf *b);

#endif
