/* luasrc.h - the Lua files compiled into the binary (see src/embed.c). */
#ifndef LUASRC_H
#define LUASRC_H

#include <stddef.h>

struct luasrc {
	const char	*path;		/* as in the repository: "lua/walua/router.lua" */
	const char	*data;		/* NUL-terminated text */
	size_t		 len;
};

extern const struct luasrc luasrc_files[];	/* ends with a NULL path */

/* Return the embedded file at path, or NULL. */
const struct luasrc	*luasrc_find(const char *path);


struct lua_State;
/*
 * Load the embedded module modname ("walua.router" -> lua/walua/router.lua)
 * as a text chunk and push it (a function).  Returns LUA_OK, or an error
 * code with the message pushed.  [-0, +1, m]
 */
int	luasrc_load(struct lua_State *L, const char *modname);

struct buf;
int	luasrc_read(const char *path, struct buf *out, char *err,
	    size_t errlen);

#endif
