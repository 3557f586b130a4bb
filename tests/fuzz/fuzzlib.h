/* fuzzlib.h - what the libFuzzer targets share (tests/fuzz/fuzzlib.c). */
#ifndef FUZZLIB_H
#define FUZZLIB_H

#include <stddef.h>
#include <stdint.h>

struct lua_State;

/* The libFuzzer entry points each target defines. */
int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Bounds on the Lua states created after they are set (0: none).  Only
 * one bounded state may be alive at a time: the counts are global.
 */
extern long	fuzz_lua_budget;	/* VM instructions per state */
extern size_t	fuzz_lua_memory;	/* bytes per state */

/*
 * Every luaL_newstate of the project code comes here (the targets link
 * with -Wl,--wrap=luaL_newstate); the names are the linker's.
 */
struct lua_State *__wrap_luaL_newstate(void);
struct lua_State *__real_luaL_newstate(void);

char		*fuzz_line(const uint8_t **data, size_t *size);
const char	*fuzz_tmpdir(void);
char		*fuzz_path(const char *name);
void		 fuzz_write(const char *path, const void *data, size_t size);

#endif
