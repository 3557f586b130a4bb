/* luasrc.c - look up and load the Lua files compiled into the binary. */
#include "luasrc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "buf.h"

const struct luasrc *
luasrc_find(const char *path)
{
	const struct luasrc *f;

	for (f = luasrc_files; f->path != NULL; f++)
		if (strcmp(f->path, path) == 0)
			return f;
	return NULL;
}

int
luasrc_load(lua_State *L, const char *modname)
{
	const struct luasrc	*f;
	char			 path[256], chunk[260];
	size_t			 i, n;

	n = strlen(modname);
	if (n + 9 >= sizeof(path)) {
		lua_pushfstring(L, "module name too long '%s'", modname);
		return LUA_ERRFILE;
	}
	memcpy(path, "lua/", 4);
	for (i = 0; i < n; i++)
		path[4 + i] = modname[i] == '.' ? '/' : modname[i];
	memcpy(path + 4 + n, ".lua", 5);
	if ((f = luasrc_find(path)) == NULL) {
		lua_pushfstring(L, "no embedded module '%s'", modname);
		return LUA_ERRFILE;
	}
	snprintf(chunk, sizeof(chunk), "@%s", path);
	return luaL_loadbufferx(L, f->data, f->len, chunk, "t");
}

/*
 * Read a handler script into out: an absolute path from disk, a relative
 * one (the built-in demo's) from the embedded files.  Returns 0, or -1
 * with the reason in err.
 */
int
luasrc_read(const char *path, struct buf *out, char *err, size_t errlen)
{
	const struct luasrc	*f;
	FILE			*fp;
	char			 chunk[65536];
	size_t			 n;

	buf_reset(out);
	if (path[0] != '/') {
		if ((f = luasrc_find(path)) == NULL) {
			snprintf(err, errlen, "cannot read handler '%s': "
			    "not found", path);
			return -1;
		}
		if (buf_append(out, f->data, f->len) == -1) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		return 0;
	}
	if ((fp = fopen(path, "rb")) == NULL) {
		snprintf(err, errlen, "cannot read handler '%s': %s", path,
		    strerror(errno));
		return -1;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
		if (buf_append(out, chunk, n) == -1)
			break;
	if (ferror(fp) || !feof(fp)) {
		snprintf(err, errlen, "cannot read handler '%s'", path);
		fclose(fp);
		return -1;
	}
	fclose(fp);
	if (out->data == NULL && buf_append(out, "", 0) == -1) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}
