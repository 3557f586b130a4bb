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
int	pack_is(const char *p, size_t len);

#endif
