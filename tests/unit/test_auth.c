/* test_auth.c - bearer checks, the constant-time compare, HMACs. */
#include "auth.h"

#include <pthread.h>

#include "hex.h"
#include "unit.h"

/* RFC 4231's test case 2, as auth_hmac_sha256 gives it, in hex. */
static void
jefe(char hex[65])
{
	unsigned char	md[32];

	hex[0] = '\0';
	if (auth_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28,
	    md) == 0)
		hex_encode(md, sizeof(md), hex);
}

#define JEFE	"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"

/* A thread's own kept contexts: right, and gone when it ends (ASan). */
static void *
hmac_thread(void *arg)
{
	char	hex[65];
	int	i, *bad = arg;

	for (i = 0; i < 100; i++) {
		jefe(hex);
		if (strcmp(hex, JEFE) != 0)
			(*bad)++;
	}
	return NULL;
}

int
main(void)
{
	const char	*reason;

	CHECK(auth_equal("abc", 3, "abc", 3));
	CHECK(!auth_equal("abc", 3, "abd", 3));
	CHECK(!auth_equal("abc", 3, "abcd", 4));
	CHECK(!auth_equal("", 0, "a", 1));

	CHECK(auth_bearer("Bearer s3cret", "s3cret", NULL, &reason));
	CHECK(auth_bearer("bearer s3cret", "s3cret", NULL, &reason));
	CHECK(auth_bearer("BEARER   s3cret", "s3cret", NULL, &reason));
	reason = NULL;
	CHECK(!auth_bearer(NULL, "s3cret", NULL, &reason));
	CHECK_STR(reason, "missing");
	CHECK(!auth_bearer("", "s3cret", NULL, &reason));
	CHECK_STR(reason, "missing");
	CHECK(!auth_bearer("Basic czNjcmV0", "s3cret", NULL, &reason));
	CHECK_STR(reason, "scheme");
	CHECK(!auth_bearer("Bearers3cret", "s3cret", NULL, &reason));
	CHECK_STR(reason, "scheme");
	CHECK(!auth_bearer("s3cret", "s3cret", NULL, &reason));
	CHECK_STR(reason, "scheme");
	CHECK(!auth_bearer("Bearer s3cre", "s3cret", NULL, &reason));
	CHECK_STR(reason, "token");
	CHECK(!auth_bearer("Bearer s3cret2", "s3cret", NULL, &reason));
	CHECK_STR(reason, "token");
	CHECK(!auth_bearer("Bearer s3cret extra", "s3cret", NULL, &reason));
	CHECK_STR(reason, "token");
	CHECK(!auth_bearer("Bearer ", "s3cret", NULL, &reason));

	/* against the digest an endpoint keeps of its token */
	{
		struct auth_digest	d, other;

		auth_digest(&d, "s3cret");
		auth_digest(&other, "s3cre");
		CHECK(auth_bearer("Bearer s3cret", NULL, &d, &reason));
		CHECK(!auth_bearer("Bearer s3cre", NULL, &d, &reason));
		CHECK_STR(reason, "token");
		CHECK(!auth_bearer("Bearer s3cret2", NULL, &d, &reason));
		CHECK(!auth_bearer("Bearer s3cret", NULL, &other, &reason));
		CHECK(auth_bearer("Bearer s3cre", NULL, &other, &reason));
		CHECK(!auth_bearer("Bearer s3cret x", NULL, &d, &reason));
	}

	/* GitHub's published webhook vector */
	{
		const char *secret = "It's a Secret to Everybody";
		const char *body = "Hello, World!";
		const char *want = "757107ea0eb2509fc211221cce984b8a37570b6d"
		    "7586c22c46f4379c8b043e17";
		char hex[65], hdr[80];

		auth_hmac_hex(secret, body, strlen(body), hex);
		CHECK_STR(hex, want);
		snprintf(hdr, sizeof(hdr), "sha256=%s", want);
		CHECK(auth_signature(hdr, 1, secret, body, strlen(body),
		    &reason));
		CHECK(auth_signature(want, 0, secret, body, strlen(body),
		    &reason));
		/* Kapso: upper-case hex, a prefix, white space around */
		snprintf(hdr, sizeof(hdr), " SHA256=%s ", "757107EA0EB2509FC21"
		    "1221CCE984B8A37570B6D7586C22C46F4379C8B043E17");
		CHECK(auth_signature(hdr, 0, secret, body, strlen(body),
		    &reason));
		/* Meta needs the prefix */
		CHECK(!auth_signature(want, 1, secret, body, strlen(body),
		    &reason));
		CHECK_STR(reason, "malformed");
		CHECK(!auth_signature(hdr + 8, 0, secret, "Hello, World?", 13,
		    &reason));
		CHECK(!auth_signature(NULL, 0, secret, body, 13, &reason));
		CHECK_STR(reason, "missing");
		CHECK(!auth_signature("sha256=abc", 1, secret, body, 13,
		    &reason));
		CHECK_STR(reason, "malformed");
		snprintf(hdr, sizeof(hdr), "sha256=%s", want);
		CHECK(!auth_signature(hdr, 1, "wrong secret", body, 13,
		    &reason));
		CHECK_STR(reason, "signature");
	}
	/*
	 * Kept keyed contexts (auth.c): the same key again, keys of the same
	 * length, a binary key, and more keys than a thread keeps, in turns.
	 */
	{
		static const char *const filler[] = { "k1", "k2", "k3", "k4",
		    "k5" };
		unsigned char	key20[20], md[32];
		char		hex[65];
		pthread_t	t[2];
		int		round, i, bad[2] = { 0, 0 };

		memset(key20, 0x0b, sizeof(key20));
		for (round = 0; round < 3; round++) {
			jefe(hex);
			CHECK_STR(hex, JEFE);
			CHECK(auth_hmac_sha256("Jeff", 4,
			    "what do ya want for nothing?", 28, md) == 0);
			hex_encode(md, sizeof(md), hex);
			CHECK(strcmp(hex, JEFE) != 0);
			/* RFC 4231's test case 1 */
			CHECK(auth_hmac_sha256(key20, sizeof(key20), "Hi There",
			    8, md) == 0);
			hex_encode(md, sizeof(md), hex);
			CHECK_STR(hex, "b0344c61d8db38535ca8afceaf0bf12b"
			    "881dc200c9833da726e9376c2e32cff7");
			auth_hmac_hex("It's a Secret to Everybody",
			    "Hello, World!", 13, hex);
			CHECK_STR(hex, "757107ea0eb2509fc211221cce984b8a"
			    "37570b6d7586c22c46f4379c8b043e17");
			for (i = 0; i < 5; i++)
				CHECK(auth_hmac_sha256(filler[i], 2, "x", 1,
				    md) == 0);
		}
		/* the kept digest context, again and again */
		for (i = 0; i < 2; i++) {
			auth_sha256_hex("abc", 3, hex);
			CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223"
			    "b00361a396177a9cb410ff61f20015ad");
			auth_sha256_hex("", 0, hex);
			CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb924"
			    "27ae41e4649b934ca495991b7852b855");
		}
		for (i = 0; i < 2; i++)
			CHECK(pthread_create(&t[i], NULL, hmac_thread,
			    &bad[i]) == 0);
		for (i = 0; i < 2; i++)
			CHECK(pthread_join(t[i], NULL) == 0);
		CHECK(bad[0] == 0 && bad[1] == 0);
	}
	{
		size_t n;
		const char *t = auth_bearer_token("bearer abc", &n);
		CHECK(t != NULL && n == 3 && strncmp(t, "abc", 3) == 0);
		CHECK(auth_bearer_token("Basic abc", &n) == NULL);
		CHECK(auth_bearer_token("Bearer ", &n) == NULL);
	}
	return UNIT_DONE();
}
