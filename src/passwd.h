/* passwd.h - console passwords: salted PBKDF2-HMAC-SHA256 hashes. */
#ifndef PASSWD_H
#define PASSWD_H

#include <stddef.h>

#define PASSWD_ITERATIONS	300000	/* what `console-passwd` writes */
#define PASSWD_MIN_ITERATIONS	10000
#define PASSWD_MAX_ITERATIONS	10000000
#define PASSWD_HASH_MAX		128	/* the longest hash string, NUL too */

int	passwd_hash(const char *pw, size_t pwlen, int iterations, char *out,
	    size_t outlen);
int	passwd_verify(const char *stored, const char *pw, size_t pwlen);
int	passwd_valid(const char *stored);

#endif
