/*
 * passwd.c - the console's password hashes:
 *
 *	pbkdf2-sha256$<iterations>$<salt, base64>$<hash, base64>
 *
 * PBKDF2-HMAC-SHA256 (libcrypto's PKCS5_PBKDF2_HMAC) over a random
 * 16-byte salt, 32 bytes out; the iterations travel with the hash, so a
 * stronger setting later does not invalidate older hashes.  The hash is
 * compared in constant time (CRYPTO_memcmp).  A config holds only such a
 * string, never a password.
 */
#include "passwd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define PREFIX		"pbkdf2-sha256$"
#define SALT_LEN	16
#define KEY_LEN		32

struct parsed {
	int		 iterations;
	unsigned char	 salt[64];
	int		 saltlen;
	unsigned char	 key[64];
	int		 keylen;
};

/*
 * Decode the base64 text [s, s + len) into out (room for outlen bytes).
 * Returns the byte count, or -1 when it is not canonical padded base64.
 */
static int
unbase64(const char *s, size_t len, unsigned char *out, size_t outlen)
{
	unsigned char	tmp[96];
	int		n;

	if (len == 0 || len % 4 != 0 || len / 4 * 3 > sizeof(tmp) ||
	    strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789+/=") < len)
		return -1;
	if ((n = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)len)) < 0)
		return -1;
	/* EVP_DecodeBlock counts the padding as bytes */
	while (len > 0 && s[len - 1] == '=') {
		len--;
		n--;
	}
	if (n <= 0 || (size_t)n > outlen)
		return -1;
	memcpy(out, tmp, (size_t)n);
	return n;
}

/* Split stored into p; -1 when it is not in the format. */
static int
parse(const char *stored, struct parsed *p)
{
	const char	*it, *salt, *key;
	char		*end;
	long		 n;

	if (stored == NULL || strncmp(stored, PREFIX, strlen(PREFIX)) != 0)
		return -1;
	it = stored + strlen(PREFIX);
	if (*it < '1' || *it > '9')
		return -1;
	errno = 0;
	n = strtol(it, &end, 10);
	if (errno != 0 || *end != '$' || n < PASSWD_MIN_ITERATIONS ||
	    n > PASSWD_MAX_ITERATIONS)
		return -1;
	p->iterations = (int)n;
	salt = end + 1;
	if ((key = strchr(salt, '$')) == NULL || strchr(key + 1, '$') != NULL)
		return -1;
	p->saltlen = unbase64(salt, (size_t)(key - salt), p->salt,
	    sizeof(p->salt));
	key++;
	p->keylen = unbase64(key, strlen(key), p->key, sizeof(p->key));
	/* at least 8 bytes of salt, 16 of hash: anything less is a mistake */
	if (p->saltlen < 8 || p->keylen < 16)
		return -1;
	return 0;
}

/* Whether stored is a hash in the format (iterations within bounds). */
int
passwd_valid(const char *stored)
{
	struct parsed	p;

	return parse(stored, &p) == 0;
}

/*
 * Hash pw with a new random salt into out.  Returns 0, or -1 (no
 * randomness, iterations out of bounds, out too small).
 */
int
passwd_hash(const char *pw, size_t pwlen, int iterations, char *out,
    size_t outlen)
{
	unsigned char	salt[SALT_LEN], key[KEY_LEN];
	char		salt64[32], key64[48];
	int		n;

	if (iterations < PASSWD_MIN_ITERATIONS ||
	    iterations > PASSWD_MAX_ITERATIONS || pwlen > (size_t)1 << 20)
		return -1;
	if (RAND_bytes(salt, sizeof(salt)) != 1 ||
	    PKCS5_PBKDF2_HMAC(pw, (int)pwlen, salt, sizeof(salt), iterations,
	    EVP_sha256(), sizeof(key), key) != 1)
		return -1;
	EVP_EncodeBlock((unsigned char *)salt64, salt, sizeof(salt));
	EVP_EncodeBlock((unsigned char *)key64, key, sizeof(key));
	OPENSSL_cleanse(key, sizeof(key));
	n = snprintf(out, outlen, PREFIX "%d$%s$%s", iterations, salt64,
	    key64);
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

/*
 * Whether pw is the password of stored: 1 yes, 0 no, -1 stored is not a
 * hash in the format (or the computation failed).
 */
int
passwd_verify(const char *stored, const char *pw, size_t pwlen)
{
	struct parsed	p;
	unsigned char	key[64];
	int		ok;

	if (parse(stored, &p) == -1 || pwlen > (size_t)1 << 20)
		return -1;
	if (PKCS5_PBKDF2_HMAC(pw, (int)pwlen, p.salt, p.saltlen, p.iterations,
	    EVP_sha256(), p.keylen, key) != 1)
		return -1;
	ok = CRYPTO_memcmp(key, p.key, (size_t)p.keylen) == 0;
	OPENSSL_cleanse(key, sizeof(key));
	return ok;
}
