/* httpd.h - the HTTP side (libmicrohttpd threads). */
#ifndef HTTPD_H
#define HTTPD_H

#include <stddef.h>

struct config;

int	httpd_start(const struct config *, char *err, size_t errlen);
void	httpd_stop(void);
int	httpd_listen_fd(int which);

#endif
