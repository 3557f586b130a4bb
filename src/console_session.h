/* console_session.h - the console's sessions and login lockout, in memory. */
#ifndef CONSOLE_SESSION_H
#define CONSOLE_SESSION_H

#include <stddef.h>
#include <stdint.h>

#define SESSION_ID_HEX		64	/* 32 random bytes */
#define SESSION_IDLE_MS		(3600 * 1000LL)		/* 1 h unused */
#define SESSION_MAX_MS		(12 * 3600 * 1000LL)	/* 12 h at most */

struct session_view {
	char	user[65];
	char	csrf[SESSION_ID_HEX + 1];
};

int	session_create(const char *user, const char *password_hash,
	    char id[SESSION_ID_HEX + 1]);
int	session_find(const char *id, const char *(*hash_of)(const void *,
	    const char *), const void *arg, struct session_view *out);
void	session_drop(const char *id);
void	session_free_all(void);

int	lockout_wait(const char *user, const char *addr);
void	lockout_fail(const char *user, const char *addr);
void	lockout_clear(const char *user, const char *addr);

#endif
