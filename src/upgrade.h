/* upgrade.h - inherited listening sockets, the database lock, SIGUSR2. */
#ifndef UPGRADE_H
#define UPGRADE_H

#include <stddef.h>
#include <sys/types.h>

void	upgrade_init(char **argv);
int	upgrade_listen_fd(int which);	/* 0: listen, 1: admin_listen */
int	upgrade_is_new(void);		/* started by an upgrade */
void	upgrade_say_ready(void);
int	upgrade_lock(const char *database, int wait_ms, char *err,
	    size_t errlen);
int	upgrade_start(int listen_fd, int admin_fd);
int	upgrade_child_fd(void);		/* poll it for "ready"; -1: none */
int	upgrade_poll(int readable);	/* 1: the new binary is ready */
pid_t	upgrade_child(void);

#endif
