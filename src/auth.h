/* auth.h - authenticating webhook deliveries; constant-time compares. */
#ifndef AUTH_H
#define AUTH_H

#include <stddef.h>

/*
 * A secret as a delivery's is compared with it: its SHA-256, made once
 * when the config is loaded, and its length.
 */
struct auth_digest {
	unsigned char	md[32];
	size_t		len;
};

void	auth_digest(struct auth_digest *, const char *secret);
int	auth_equal(const char *a, size_t alen, const char *b, size_t blen);
int	auth_bearer(const char *header, const char *token,
	    const struct auth_digest *, const char **reason);
const char *auth_bearer_token(const char *header, size_t *len);
int	auth_signature(const char *header, int need_prefix, const char *secret,
	    const char *body, size_t len, const char **reason);
int	auth_hmac_sha256(const void *key, size_t keylen, const void *data,
	    size_t len, unsigned char md[32]);
void	auth_hmac_hex(const char *key, const void *data, size_t len,
	    char out[65]);
void	auth_sha256(const void *data, size_t len, unsigned char md[32]);
void	auth_sha256_hex(const void *data, size_t len, char out[65]);

#endif
