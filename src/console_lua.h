/* console_lua.h - the console's pages, rendered by lua/walua/console.lua. */
#ifndef CONSOLE_LUA_H
#define CONSOLE_LUA_H

#include <stddef.h>

#include "buf.h"

struct MHD_Connection;
struct config;

struct console_req {
	const struct config	*cfg;
	struct MHD_Connection	*conn;		/* its query arguments */
	const char		*method;
	const char		*path;		/* under console.path: "/..." */
	const char		*user;		/* NULL: no session */
	const char		*csrf;
	const char		*form;		/* the POST body, or NULL */
	size_t			 formlen;
	const char		*message;	/* for the login page */
};

struct console_resp {
	int		 status;
	char		 type[64];
	char		 location[512];		/* "": none */
	struct buf	 body;
};

int	console_lua(const struct console_req *, struct console_resp *);
void	console_lua_free(void);

#endif
