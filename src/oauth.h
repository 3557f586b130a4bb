/* oauth.h - the OAuth2 token endpoint and the check of its tokens. */
#ifndef OAUTH_H
#define OAUTH_H

#include <stddef.h>

#include "buf.h"

struct config;

struct oauth_answer {
	int		 status;
	struct buf	 body;			/* JSON; caller frees */
	int		 basic;			/* client used HTTP Basic */
	int		 retry_after;		/* seconds, for 429/503 */
	char		 reason[32];		/* the error, for metrics/logs */
	char		 client[64];		/* the client id asked for */
};

void	oauth_token(const struct config *, const char *authz,
	    const char *ctype, const char *body, size_t len,
	    struct oauth_answer *);
int	oauth_check(const struct config *, const char *authz,
	    const char **reason);
void	oauth_shutdown(void);

#endif
