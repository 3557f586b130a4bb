/*
 * fuzz_auth.c - libFuzzer target for the Authorization header and
 * signature parsers (src/auth.c): auth_bearer, auth_bearer_token and
 * auth_signature with and without a required "sha256=" prefix.
 *
 * Input: byte 0 holds flags (FL_* below), then the header (one line), then
 * the body.  A random header almost never carries the body's HMAC, so a
 * flag appends it: that way the matching path, and the white space and
 * case handling around a good signature, are fuzzed too.
 *
 * Besides sanitizer reports, the parsers must agree with each other: a
 * header auth_bearer accepts for a token is one whose token
 * auth_bearer_token returns, and the other way round; a signature good
 * with the prefix required is good without.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "fuzzlib.h"

#define FL_NOHEADER	0x01	/* the header is absent (NULL) */
#define FL_HMAC		0x02	/* append the body's HMAC to the header */
#define FL_HMAC_UPPER	0x04	/* ... in upper-case hex */
#define FL_SUFFIX	0x08	/* ... and a space after it */

#define TOKEN		"s3cret-token"
#define SECRET		"It's a Secret to Everybody"

static void
fail(const char *what, const char *header)
{
	fprintf(stderr, "fuzz_auth: %s: '%s'\n", what, header ? header :
	    "(null)");
	abort();
}

static void
bearer(const char *header)
{
	static struct auth_digest digest;
	const char	*reason = NULL, *tok;
	char		*copy;
	size_t		 len = 0;
	int		 ok;

	if (digest.len == 0)
		auth_digest(&digest, TOKEN);
	ok = auth_bearer(header, TOKEN, NULL, &reason);
	if (!ok && reason == NULL)
		fail("auth_bearer refused without a reason", header);
	if (auth_bearer(header, NULL, &digest, &reason) != ok)
		fail("auth_bearer disagrees with itself on the token's digest",
		    header);
	tok = auth_bearer_token(header, &len);
	if (ok != (tok != NULL && len == strlen(TOKEN) &&
	    memcmp(tok, TOKEN, len) == 0))
		fail("auth_bearer and auth_bearer_token disagree", header);
	if (tok == NULL)
		return;
	if (len == 0 || tok + len != header + strlen(header))
		fail("auth_bearer_token gave a bad span", header);
	if ((copy = strndup(tok, len)) == NULL)
		abort();
	if (!auth_bearer(header, copy, NULL, &reason))
		fail("auth_bearer refused the token auth_bearer_token found",
		    header);
	free(copy);
}

static void
signature(const char *header, const char *body, size_t len)
{
	const char	*reason = NULL;
	int		 loose, strict;

	loose = auth_signature(header, 0, SECRET, body, len, &reason);
	if (!loose && reason == NULL)
		fail("auth_signature refused without a reason", header);
	reason = NULL;
	strict = auth_signature(header, 1, SECRET, body, len, &reason);
	if (!strict && reason == NULL)
		fail("auth_signature refused without a reason", header);
	if (strict && !loose)
		fail("a signature good with the prefix is bad without", header);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	*line, *header = NULL, hmac[65], *body;
	int	 flags, i;

	if (size < 1)
		return -1;
	flags = data[0];
	data++;
	size--;
	line = fuzz_line(&data, &size);
	/* a copy of exactly its length, so a read past the end is caught */
	if ((body = malloc(size ? size : 1)) == NULL)
		abort();
	memcpy(body, data, size);
	if (flags & FL_HMAC) {
		auth_hmac_hex(SECRET, body, size, hmac);
		if (flags & FL_HMAC_UPPER)
			for (i = 0; hmac[i] != '\0'; i++)
				if (hmac[i] >= 'a' && hmac[i] <= 'f')
					hmac[i] -= 'a' - 'A';
		if (asprintf(&header, "%s%s%s", line, hmac, flags & FL_SUFFIX ?
		    " " : "") == -1)
			abort();
		free(line);
	} else if (!(flags & FL_NOHEADER))
		header = line;
	else
		free(line);

	bearer(header);
	signature(header, body, size);
	free(header);
	free(body);
	return 0;
}
