/* listener.h - the listening sockets walua opens (or is handed) itself. */
#ifndef LISTENER_H
#define LISTENER_H

#include <stddef.h>

int	listener_open(const char *key, const char *addr, const char *host,
	    int port, int fd, int share, char *err, size_t errlen);

#endif
