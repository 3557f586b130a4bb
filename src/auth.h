/* auth.h - authenticating webhook deliveries; constant-time compares. */
#ifndef AUTH_H
#define AUTH_H

#include <stddef.h>

int	auth_equal(const char *a, size_t alen, const char *b, size_t blen);
int	auth_bearer(const char *header, const char *token, const char **reason);

#endif
