/*
 * auth.c - authentication of deliveries (bearer here; signatures and
 * OAuth2 tokens build on the same compare).  Secrets are compared in
 * constant time and never logged: callers only get a reason code.
 */
#include "auth.h"

#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

/*
 * 1 when a and b are equal.  Both are hashed first so the time taken does
 * not depend on where they differ, nor on the secret's length.
 */
int
auth_equal(const char *a, size_t alen, const char *b, size_t blen)
{
	unsigned char	ha[SHA256_DIGEST_LENGTH], hb[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)a, alen, ha);
	SHA256((const unsigned char *)b, blen, hb);
	return CRYPTO_memcmp(ha, hb, sizeof(ha)) == 0 && alen == blen;
}

/*
 * Check an Authorization header against the bearer token.  Returns 1 when
 * it matches; else 0 with *reason "missing", "scheme" or "token".
 */
int
auth_bearer(const char *header, const char *token, const char **reason)
{
	const char	*p;

	if (header == NULL || *header == '\0') {
		*reason = "missing";
		return 0;
	}
	if (strncasecmp(header, "Bearer", 6) != 0 ||
	    (header[6] != ' ' && header[6] != '\t')) {
		*reason = "scheme";
		return 0;
	}
	for (p = header + 6; *p == ' ' || *p == '\t'; p++)
		;
	if (!auth_equal(p, strcspn(p, " \t"), token, strlen(token)) ||
	    p[strcspn(p, " \t")] != '\0') {
		*reason = "token";
		return 0;
	}
	return 1;
}
