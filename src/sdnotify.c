/*
 * sdnotify.c - the sd_notify(3) protocol without libsystemd: one datagram
 * ("READY=1", "RELOADING=1", "STOPPING=1", "MAINPID=n") to the AF_UNIX
 * socket named by NOTIFY_SOCKET ('@' first: the abstract namespace).
 * Without NOTIFY_SOCKET it does nothing.  The variable stays in the
 * environment: a binary started by an upgrade (upgrade.c) reports on it
 * too, once the old one has told systemd its pid (MAINPID).
 */
#include "sdnotify.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

void
sd_notify_msg(const char *msg)
{
	const char		*path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un	 sa;
	socklen_t		 len;
	size_t			 n;
	int			 fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@'))
		return;
	n = strlen(path);
	if (n >= sizeof(sa.sun_path))
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, n);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0';
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return;
	(void)!sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
	    len);
	close(fd);
}
