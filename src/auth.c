/*
 * auth.c - authentication of deliveries (bearer here; signatures and
 * OAuth2 tokens build on the same compare).  Secrets are compared in
 * constant time and never logged: callers only get a reason code.
 */
#include "auth.h"

#include <pthread.h>
#include <string.h>
#include <strings.h>

#include <ctype.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "hex.h"

static EVP_MD		*sha256_md;
static pthread_once_t	 sha256_once = PTHREAD_ONCE_INIT;

/* SHA256() looks the algorithm up on every call; look it up once. */
static void
sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static void
sha256(const char *p, size_t len, unsigned char *md)
{
	pthread_once(&sha256_once, sha256_fetch);
	if (sha256_md == NULL || EVP_Digest(p, len, md, NULL, sha256_md,
	    NULL) != 1)
		SHA256((const unsigned char *)p, len, md);
}

void
auth_digest(struct auth_digest *d, const char *secret)
{
	d->len = strlen(secret);
	sha256(secret, d->len, d->md);
}

/* 1 when a is the secret of digest b (see auth_equal). */
static int
equal_digest(const char *a, size_t alen, const struct auth_digest *b)
{
	unsigned char	ha[SHA256_DIGEST_LENGTH];

	sha256(a, alen, ha);
	return CRYPTO_memcmp(ha, b->md, sizeof(ha)) == 0 && alen == b->len;
}

/*
 * 1 when a and b are equal.  Both are hashed first so the time taken does
 * not depend on where they differ, nor on the secret's length.  The one
 * constant-time compare: walua.crypto's equal() is this too, and a
 * bearer token is compared with the digest its endpoint keeps.
 */
int
auth_equal(const char *a, size_t alen, const char *b, size_t blen)
{
	struct auth_digest	db;

	db.len = blen;
	sha256(b, blen, db.md);
	return equal_digest(a, alen, &db);
}

/* Lower-case hex HMAC-SHA256 of data under key, into out (65 bytes). */
void
auth_hmac_hex(const char *key, const void *data, size_t len, char out[65])
{
	unsigned char	md[EVP_MAX_MD_SIZE];
	unsigned int	mdlen = 0;

	if (HMAC(EVP_sha256(), key, (int)strlen(key), data, len, md,
	    &mdlen) == NULL)
		mdlen = 0;
	hex_encode(md, mdlen, out);
}

void
auth_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char	md[SHA256_DIGEST_LENGTH];

	SHA256(data, len, md);
	hex_encode(md, sizeof(md), out);
}

/*
 * Check a signature header (hex HMAC-SHA256 of the raw body under
 * secret).  Kapso's X-Webhook-Signature may carry a "sha256=" prefix and
 * upper-case hex (need_prefix 0); Meta's X-Hub-Signature-256 must have the
 * prefix (need_prefix 1).  Returns 1 when it matches; else 0 with *reason
 * "missing", "malformed" or "signature".
 */
int
auth_signature(const char *header, int need_prefix, const char *secret,
    const char *body, size_t len, const char **reason)
{
	char	want[65], got[65];
	size_t	n, i;

	if (header == NULL) {
		*reason = "missing";
		return 0;
	}
	while (*header == ' ' || *header == '\t')
		header++;
	if (strncasecmp(header, "sha256=", 7) == 0)
		header += 7;
	else if (need_prefix) {
		*reason = "malformed";
		return 0;
	}
	for (n = 0; header[n] != '\0' && header[n] != ' ' &&
	    header[n] != '\t'; n++)
		;
	for (i = n; header[i] == ' ' || header[i] == '\t'; i++)
		;
	if (n != 64 || header[i] != '\0') {
		*reason = "malformed";
		return 0;
	}
	for (i = 0; i < 64; i++) {
		if (!isxdigit((unsigned char)header[i])) {
			*reason = "malformed";
			return 0;
		}
		got[i] = (char)tolower((unsigned char)header[i]);
	}
	got[64] = '\0';
	auth_hmac_hex(secret, body, len, want);
	if (!auth_equal(got, 64, want, 64)) {
		*reason = "signature";
		return 0;
	}
	return 1;
}

/*
 * The token of an "Authorization: Bearer <token>" header (scheme matched
 * case-insensitively), or NULL.  *len is its length.
 */
const char *
auth_bearer_token(const char *header, size_t *len)
{
	const char	*p;

	if (header == NULL || strncasecmp(header, "Bearer", 6) != 0 ||
	    (header[6] != ' ' && header[6] != '\t'))
		return NULL;
	for (p = header + 6; *p == ' ' || *p == '\t'; p++)
		;
	*len = strcspn(p, " \t");
	if (*len == 0 || p[*len] != '\0')
		return NULL;
	return p;
}

/*
 * Check an Authorization header against the bearer token, or its digest
 * when given (the token's own SHA-256 is then not made again for each
 * delivery).  Returns 1 when it matches; else 0 with *reason "missing",
 * "scheme" or "token".
 */
int
auth_bearer(const char *header, const char *token,
    const struct auth_digest *digest, const char **reason)
{
	size_t		 n;
	int		 ok;

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
	n = strcspn(p, " \t");
	ok = digest != NULL ? equal_digest(p, n, digest) :
	    auth_equal(p, n, token, strlen(token));
	if (!ok || p[n] != '\0') {
		*reason = "token";
		return 0;
	}
	return 1;
}
