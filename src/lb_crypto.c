/*
 * lb_crypto.c - walua.crypto: hashes, HMACs, randomness and a
 * constant-time compare, from OpenSSL's libcrypto.
 *
 *   crypto.hmac_sha256(key, data) -> lower-case hex
 *   crypto.sha256(data)           -> lower-case hex
 *   crypto.random_hex(nbytes)     -> 2*nbytes hex digits (1..1024 bytes)
 *   crypto.equal(a, b)            -> boolean, in constant time
 */
#include "lb.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

static void
push_hex(lua_State *L, const unsigned char *p, size_t n)
{
	static const char	 digits[] = "0123456789abcdef";
	luaL_Buffer		 b;
	size_t			 i;
	char			*out = luaL_buffinitsize(L, &b, 2 * n);

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	luaL_pushresultsize(&b, 2 * n);
}

static int
lb_crypto_hmac_sha256(lua_State *L)
{
	size_t		 klen, dlen;
	const char	*key = luaL_checklstring(L, 1, &klen);
	const char	*data = luaL_checklstring(L, 2, &dlen);
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen = 0;

	if (HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)data,
	    dlen, md, &mdlen) == NULL)
		return luaL_error(L, "crypto.hmac_sha256: failed");
	push_hex(L, md, mdlen);
	return 1;
}

static int
lb_crypto_sha256(lua_State *L)
{
	size_t		 len;
	const char	*data = luaL_checklstring(L, 1, &len);
	unsigned char	 md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)data, len, md);
	push_hex(L, md, sizeof(md));
	return 1;
}

static int
lb_crypto_random_hex(lua_State *L)
{
	lua_Integer	 n = luaL_checkinteger(L, 1);
	unsigned char	 raw[1024];

	luaL_argcheck(L, n >= 1 && n <= (lua_Integer)sizeof(raw), 1,
	    "nbytes must be 1..1024");
	if (RAND_bytes(raw, (int)n) != 1)
		return luaL_error(L, "crypto.random_hex: no randomness");
	push_hex(L, raw, (size_t)n);
	OPENSSL_cleanse(raw, sizeof(raw));
	return 1;
}

/* Equal strings, in time that does not depend on where they differ. */
static int
lb_crypto_equal(lua_State *L)
{
	size_t		 alen, blen;
	const char	*a = luaL_checklstring(L, 1, &alen);
	const char	*b = luaL_checklstring(L, 2, &blen);
	unsigned char	 ha[SHA256_DIGEST_LENGTH], hb[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)a, alen, ha);
	SHA256((const unsigned char *)b, blen, hb);
	lua_pushboolean(L, CRYPTO_memcmp(ha, hb, sizeof(ha)) == 0 &&
	    alen == blen);
	return 1;
}

static const luaL_Reg crypto_funcs[] = {
	{ "hmac_sha256",	lb_crypto_hmac_sha256 },
	{ "sha256",		lb_crypto_sha256 },
	{ "random_hex",		lb_crypto_random_hex },
	{ "equal",		lb_crypto_equal },
	{ NULL,			NULL }
};

int
luaopen_walua_crypto(lua_State *L)
{
	luaL_newlib(L, crypto_funcs);
	return 1;
}
