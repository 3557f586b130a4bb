/* sdnotify.h - tell systemd (Type=notify) what walua is doing. */
#ifndef SDNOTIFY_H
#define SDNOTIFY_H

void	sd_notify_msg(const char *msg);

#endif
