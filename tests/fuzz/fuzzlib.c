/*
 * fuzzlib.c - what the libFuzzer targets share: Lua coverage, bounds on
 * fuzzed Lua code, input splitting and a scratch folder.
 *
 * Much of what the targets exercise is Lua (lua/walua/normalize.lua,
 * lua/walua/config.lua), run by the system's liblua, which is not
 * instrumented: libFuzzer would see event.c and config.c only and fuzz the
 * Lua half blind.  So every state the project creates gets a line hook
 * that turns the lines of the embedded modules into edges, counted in
 * libFuzzer's extra counters.  The states are created inside src/ (event.c
 * keeps its decoder private), hence the link-time wrap of luaL_newstate
 * rather than a call from the targets.
 *
 * Everything here runs on libFuzzer's one thread.
 */
#include "fuzzlib.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#define COUNT_EVERY	1000	/* instructions between two budget checks */

/*
 * libFuzzer adds any byte in this section to its features, as it does
 * its own edge counters.  64 Ki slots keep collisions rare for the few
 * thousand line pairs of the embedded modules.
 */
__attribute__((section("__libfuzzer_extra_counters"), used))
static uint8_t		 lua_edges[1 << 16];

long			 fuzz_lua_budget;
size_t			 fuzz_lua_memory;

static uint32_t		 prev_line;	/* the edge's origin */
static long		 executed;	/* instructions, bounded state */
static int		 exhausted;
static size_t		 in_use;	/* bytes, bounded state */
static lua_Alloc	 real_alloc;
static void		*real_ud;
static char		*tmpdir;

/* FNV-1a of a chunk name; the embedded ones are short. */
static uint32_t
name_hash(const char *s)
{
	uint32_t	h = 2166136261u;

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

static void
hook(lua_State *L, lua_Debug *ar)
{
	uint32_t	cur;

	if (ar->event == LUA_HOOKCOUNT) {
		executed += COUNT_EVERY;
		if (executed > fuzz_lua_budget)
			exhausted = 1;
	}
	/*
	 * Once over budget, every line raises, so a pcall in the fuzzed
	 * chunk cannot swallow the error and loop on (Redis does the same).
	 */
	if (exhausted)
		luaL_error(L, "fuzz: instruction budget exhausted");
	if (ar->event != LUA_HOOKLINE || !lua_getinfo(L, "S", ar))
		return;
	/* the fuzzed config file's own lines would only reward length */
	if (strncmp(ar->source, "@lua/", 5) != 0)
		return;
	/*
	 * The file by its name, not its address: config.c loads config.lua
	 * into a new state each time.  AFL's (prev >> 1) ^ cur makes a pair
	 * of lines an edge.
	 */
	cur = name_hash(ar->source) ^ (uint32_t)ar->currentline;
	cur = (cur * 0x9e3779b1u) >> 16;
	lua_edges[(cur ^ prev_line) & (sizeof(lua_edges) - 1)]++;
	prev_line = cur >> 1;
}

/*
 * The allocator of a bounded state: growth past fuzz_lua_memory fails as
 * a real allocator would (Lua raises "not enough memory"), so a chunk
 * asking for gigabytes is an error, not a libFuzzer out-of-memory report.
 * Blocks are still made by liblua's own allocator, so the ones it made
 * before the swap are freed the same way.
 */
static void *
bounded_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	void	*p;

	if (ptr == NULL)
		osize = 0;	/* then osize is a type, not a size */
	if (nsize > osize && nsize - osize > fuzz_lua_memory - in_use)
		return NULL;
	p = real_alloc(real_ud, ptr, osize, nsize);
	if (p == NULL && nsize != 0)
		return NULL;
	if (nsize >= osize)
		in_use += nsize - osize;
	else
		/* blocks from before the swap were never counted */
		in_use -= osize - nsize < in_use ? osize - nsize : in_use;
	return p;
}

lua_State *
__wrap_luaL_newstate(void)
{
	lua_State	*L;
	int		 mask = LUA_MASKLINE;

	if ((L = __real_luaL_newstate()) == NULL)
		return NULL;
	if (fuzz_lua_memory > 0) {
		real_alloc = lua_getallocf(L, &real_ud);
		in_use = 0;
		lua_setallocf(L, bounded_alloc, NULL);
	}
	if (fuzz_lua_budget > 0) {
		executed = 0;
		exhausted = 0;
		mask |= LUA_MASKCOUNT;
	}
	lua_sethook(L, hook, mask, COUNT_EVERY);
	return L;
}

/*
 * The next line of the input (without its newline), as a C string the
 * caller frees: headers are text, so a NUL ends one early, as it would
 * in a real request.  No newline: the rest of the input.
 */
char *
fuzz_line(const uint8_t **data, size_t *size)
{
	const uint8_t	*nl = memchr(*data, '\n', *size);
	size_t		 n = nl != NULL ? (size_t)(nl - *data) : *size;
	char		*s;

	if ((s = malloc(n + 1)) == NULL)
		abort();
	memcpy(s, *data, n);
	s[n] = '\0';
	n += nl != NULL;
	*data += n;
	*size -= n;
	return s;
}

static void
tmpdir_remove(void)
{
	DIR		*d;
	struct dirent	*e;
	char		*p;

	if (tmpdir == NULL || (d = opendir(tmpdir)) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		p = fuzz_path(e->d_name);
		unlink(p);
		free(p);
	}
	closedir(d);
	rmdir(tmpdir);
	free(tmpdir);
	tmpdir = NULL;
}

/*
 * A private folder for the run, removed at exit (a crash leaves it in
 * $TMPDIR: libFuzzer then _exits).  Register anything that must close
 * its files in there after the first call, as atexit runs backwards.
 */
const char *
fuzz_tmpdir(void)
{
	const char	*base = getenv("TMPDIR");

	if (tmpdir != NULL)
		return tmpdir;
	if (asprintf(&tmpdir, "%s/walua-fuzz.XXXXXX", base && *base ? base :
	    "/tmp") == -1 || mkdtemp(tmpdir) == NULL) {
		perror("fuzz: cannot make a scratch folder");
		abort();
	}
	atexit(tmpdir_remove);
	return tmpdir;
}

/* name inside the scratch folder; the caller frees. */
char *
fuzz_path(const char *name)
{
	char	*p;

	if (asprintf(&p, "%s/%s", fuzz_tmpdir(), name) == -1)
		abort();
	return p;
}

void
fuzz_write(const char *path, const void *data, size_t size)
{
	FILE	*fp;

	if ((fp = fopen(path, "w")) == NULL ||
	    fwrite(data, 1, size, fp) != size || fclose(fp) != 0) {
		perror(path);
		abort();
	}
}
