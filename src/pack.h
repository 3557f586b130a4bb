/* pack.h - an event's Lua table as compact bytes, and back. */
#ifndef PACK_H
#define PACK_H

#include <stddef.h>

#include <lua.h>

#include "buf.h"

#define PACK_MAGIC	0x01	/* never the first byte of a JSON text */

/* Pack the value at idx into b (reset first); -1 when it holds what JSON
 * cannot (a function, userdata) or is too deep, or memory ran out. */
int	pack_value(lua_State *, int idx, struct buf *);
/* Push the value packed in p; -1 (nothing pushed) when the bytes are not
 * a whole packed value.  Raises only when memory runs out. */
int	unpack_value(lua_State *, const char *p, size_t len);
/* A table built from C: pack_start (the magic), then pack_open, nkeys
 * key and value pairs of pack_string, pack_integer, pack_lua or a nested
 * pack_open, and pack_close with its offset.  -1 when memory ran out
 * (pack_lua: also what pack_value refuses). */
int	pack_start(struct buf *);
int	pack_open(struct buf *, size_t *at);
int	pack_close(struct buf *, size_t at, unsigned int nkeys);
int	pack_string(struct buf *, const char *, size_t);
int	pack_integer(struct buf *, long long);
int	pack_lua(lua_State *, int idx, struct buf *);
int	pack_is(const char *p, size_t len);

#endif
