/*
 * lb_passwd.c - walua.passwd, for admin scripts only (`walua run
 * console-passwd`): the console's password hashes (passwd.c).
 *
 *   passwd.hash(password [, iterations]) -> "pbkdf2-sha256$..." | nil, err
 *   passwd.verify(hash, password)        -> boolean | nil, err (not a hash)
 */
#include "lb.h"

#include "passwd.h"

static int
lb_passwd_hash(lua_State *L)
{
	size_t		 len;
	const char	*pw = luaL_checklstring(L, 1, &len);
	lua_Integer	 it = luaL_optinteger(L, 2, PASSWD_ITERATIONS);
	char		 out[PASSWD_HASH_MAX];

	if (it < PASSWD_MIN_ITERATIONS || it > PASSWD_MAX_ITERATIONS) {
		lua_pushfstring(L, "iterations must be %d to %d",
		    PASSWD_MIN_ITERATIONS, PASSWD_MAX_ITERATIONS);
		return lb_push_error(L, -1, NULL, lua_tostring(L, -1));
	}
	if (passwd_hash(pw, len, (int)it, out, sizeof(out)) == -1)
		return lb_push_error(L, -1, NULL, "cannot hash: no randomness");
	lua_pushstring(L, out);
	return 1;
}

static int
lb_passwd_verify(lua_State *L)
{
	size_t		 len;
	const char	*stored = luaL_checkstring(L, 1);
	const char	*pw = luaL_checklstring(L, 2, &len);
	int		 rc = passwd_verify(stored, pw, len);

	if (rc == -1)
		return lb_push_error(L, -1, NULL, "not a pbkdf2-sha256 hash");
	lua_pushboolean(L, rc);
	return 1;
}

static const luaL_Reg passwd_funcs[] = {
	{ "hash",	lb_passwd_hash },
	{ "verify",	lb_passwd_verify },
	{ NULL,		NULL }
};

int
luaopen_walua_passwd(lua_State *L)
{
	luaL_newlib(L, passwd_funcs);
	return 1;
}
