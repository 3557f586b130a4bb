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
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "auth.h"
#include "hex.h"

/* Push the lower-case hex of the n bytes at p.  [-0, +1, m] */
static void
push_hex(lua_State *L, const unsigned char *p, size_t n)
{
	luaL_Buffer	 b;
	char		*out = luaL_buffinitsize(L, &b, 2 * n + 1);

	hex_encode(p, n, out);		/* and a NUL, not pushed */
	luaL_pushresultsize(&b, 2 * n);
}

static int
lb_crypto_hmac_sha256(lua_State *L)
{
	size_t		 klen, dlen;
	const char	*key = luaL_checklstring(L, 1, &klen);
	const char	*data = luaL_checklstring(L, 2, &dlen);
	unsigned char	 md[32];

	if (auth_hmac_sha256(key, klen, data, dlen, md) == -1)
		return luaL_error(L, "crypto.hmac_sha256: failed");
	push_hex(L, md, sizeof(md));
	return 1;
}

static int
lb_crypto_sha256(lua_State *L)
{
	size_t		 len;
	const char	*data = luaL_checklstring(L, 1, &len);
	unsigned char	 md[SHA256_DIGEST_LENGTH];

	auth_sha256(data, len, md);
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

/*
 * Equal strings, in time that depends neither on where they differ nor on
 * their lengths (auth_equal, the compare webhook auth uses).
 */
static int
lb_crypto_equal(lua_State *L)
{
	size_t		 alen, blen;
	const char	*a = luaL_checklstring(L, 1, &alen);
	const char	*b = luaL_checklstring(L, 2, &blen);

	lua_pushboolean(L, auth_equal(a, alen, b, blen));
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
