/*
 * auth.c - authentication of deliveries (bearer here; signatures and
 * OAuth2 tokens build on the same compare).  Secrets are compared in
 * constant time and never logged: callers only get a reason code.
 */
#include "auth.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ctype.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "hex.h"

/*
 * What each thread keeps of libcrypto between calls.  SHA256() and
 * HMAC() look their algorithms up, allocate their contexts and (HMAC)
 * set the key up on every call: an HMAC-SHA256 of a delivery took 2.2 µs
 * that way against 0.6 µs with a context kept keyed, and a short digest
 * 0.36 µs against 0.12 to 0.16 (README, Design notes).  A thread
 * keeps MACS_KEPT keyed contexts, the secrets of the endpoints it
 * checks, replaced in turn.  The blocks are on a list so that what a
 * thread keeps is freed when it ends and reachable until then.
 */
#define MACS_KEPT	4

struct kept_mac {
	unsigned char	*key;		/* a copy: the config may be reloaded */
	size_t		 keylen;
	EVP_MAC_CTX	*ctx;
};

struct kept {
	EVP_MD_CTX	*md;
	struct kept_mac	 mac[MACS_KEPT];
	unsigned int	 next;		/* the one replaced next */
	struct kept	*link;		/* all_kept */
};

static EVP_MD		*sha256_md;
static EVP_MAC		*hmac_alg;
static pthread_once_t	 crypto_once = PTHREAD_ONCE_INIT;
static pthread_key_t	 kept_key;
static int		 kept_ok;
static struct kept	*all_kept;
static pthread_mutex_t	 kept_mu = PTHREAD_MUTEX_INITIALIZER;

static void
mac_clear(struct kept_mac *m)
{
	EVP_MAC_CTX_free(m->ctx);
	if (m->key != NULL)
		OPENSSL_clear_free(m->key, m->keylen);
	m->ctx = NULL;
	m->key = NULL;
	m->keylen = 0;
}

/* The thread's end: its contexts go. */
static void
kept_free(void *p)
{
	struct kept	*k = p, **pp;
	int		 i;

	pthread_mutex_lock(&kept_mu);		/* a few threads: a walk */
	for (pp = &all_kept; *pp != NULL; pp = &(*pp)->link)
		if (*pp == k) {
			*pp = k->link;
			break;
		}
	pthread_mutex_unlock(&kept_mu);
	for (i = 0; i < MACS_KEPT; i++)
		mac_clear(&k->mac[i]);
	EVP_MD_CTX_free(k->md);
	free(k);
}

static void
crypto_setup(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
	hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
	kept_ok = pthread_key_create(&kept_key, kept_free) == 0;
}

/* The calling thread's block, or NULL (no memory): callers go without. */
static struct kept *
kept(void)
{
	struct kept	*k;

	pthread_once(&crypto_once, crypto_setup);
	if (!kept_ok)
		return NULL;
	if ((k = pthread_getspecific(kept_key)) != NULL)
		return k;
	if ((k = calloc(1, sizeof(*k))) == NULL)
		return NULL;
	if (pthread_setspecific(kept_key, k) != 0) {
		free(k);
		return NULL;
	}
	pthread_mutex_lock(&kept_mu);
	k->link = all_kept;
	all_kept = k;
	pthread_mutex_unlock(&kept_mu);
	return k;
}

/* SHA-256 of the len bytes at p into md (32 bytes). */
void
auth_sha256(const void *p, size_t len, unsigned char md[32])
{
	struct kept	*k = kept();

	if (k != NULL && sha256_md != NULL && (k->md != NULL ||
	    (k->md = EVP_MD_CTX_new()) != NULL) &&
	    EVP_DigestInit_ex2(k->md, sha256_md, NULL) == 1 &&
	    EVP_DigestUpdate(k->md, p, len) == 1 &&
	    EVP_DigestFinal_ex(k->md, md, NULL) == 1)
		return;
	SHA256(p, len, md);
}

/* The thread's context keyed with key, ready for data; NULL: none. */
static EVP_MAC_CTX *
kept_mac(const void *key, size_t keylen)
{
	struct kept	*k = kept();
	struct kept_mac	*m;
	OSSL_PARAM	 params[2];
	int		 i;

	if (k == NULL || hmac_alg == NULL)
		return NULL;
	/* both are secrets of this process, neither a sender's bytes */
	for (i = 0; i < MACS_KEPT; i++) {
		m = &k->mac[i];
		if (m->ctx != NULL && m->keylen == keylen &&
		    memcmp(m->key, key, keylen) == 0)
			return EVP_MAC_init(m->ctx, NULL, 0, NULL) == 1 ?
			    m->ctx : NULL;
	}
	m = &k->mac[k->next];
	k->next = (k->next + 1) % MACS_KEPT;
	mac_clear(m);
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	    (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if ((m->key = malloc(keylen > 0 ? keylen : 1)) == NULL ||
	    (m->ctx = EVP_MAC_CTX_new(hmac_alg)) == NULL ||
	    EVP_MAC_init(m->ctx, key, keylen, params) != 1) {
		mac_clear(m);
		return NULL;
	}
	memcpy(m->key, key, keylen);
	m->keylen = keylen;
	return m->ctx;
}

/*
 * HMAC-SHA256 of data under key into md (32 bytes).  Returns 0, or -1
 * when libcrypto fails.
 */
int
auth_hmac_sha256(const void *key, size_t keylen, const void *data,
    size_t len, unsigned char md[32])
{
	EVP_MAC_CTX	*ctx = kept_mac(key, keylen);
	unsigned int	 mdlen = 0;
	size_t		 out = 0;

	if (ctx != NULL && EVP_MAC_update(ctx, data, len) == 1 &&
	    EVP_MAC_final(ctx, md, &out, 32) == 1 && out == 32)
		return 0;
	return HMAC(EVP_sha256(), key, (int)keylen, data, len, md,
	    &mdlen) != NULL && mdlen == 32 ? 0 : -1;
}

void
auth_digest(struct auth_digest *d, const char *secret)
{
	d->len = strlen(secret);
	auth_sha256(secret, d->len, d->md);
}

/* 1 when a is the secret of digest b (see auth_equal). */
static int
equal_digest(const char *a, size_t alen, const struct auth_digest *b)
{
	unsigned char	ha[SHA256_DIGEST_LENGTH];

	auth_sha256(a, alen, ha);
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
	auth_sha256(b, blen, db.md);
	return equal_digest(a, alen, &db);
}

/* Lower-case hex HMAC-SHA256 of data under key, into out (65 bytes). */
void
auth_hmac_hex(const char *key, const void *data, size_t len, char out[65])
{
	unsigned char	md[32];

	if (auth_hmac_sha256(key, strlen(key), data, len, md) == -1) {
		out[0] = '\0';		/* matches no signature */
		return;
	}
	hex_encode(md, sizeof(md), out);
}

void
auth_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char	md[SHA256_DIGEST_LENGTH];

	auth_sha256(data, len, md);
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
