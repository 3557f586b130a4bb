/*
 * pack.c - an event's Lua table as compact bytes, and back.
 *
 * The HTTP thread decodes a delivery once; the event it builds travels to
 * the inbox and to a worker in this form, which the worker turns into a
 * table without parsing JSON again (and without walking it afterwards to
 * turn integral numbers back into integers: they travel as integers).
 * The first byte, PACK_MAGIC, can never start a JSON text, so a reader
 * tells a packed event from one stored as JSON by an older walua.
 *
 *   value  = 'n' (JSON null) | 'f' | 't'
 *          | 'i' zigzag varint | 'd' 8-byte IEEE double
 *          | 's' varint length, bytes
 *          | 'T' varint narr, varint nrec, narr values (keys 1..narr),
 *            nrec (key, value) pairs
 *
 * Only what JSON can hold is packed: strings, numbers, booleans, tables
 * and cjson.null.  Integral floats become integers, as the JSON path did;
 * infinities and NaN become null, as cjson's encoder was told to.
 */
#include "pack.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <lauxlib.h>

#define PACK_MAX_DEPTH	96

static int
put(struct buf *b, const void *p, size_t n)
{
	return buf_append(b, p, n);
}

static int
put_tag(struct buf *b, char tag)
{
	return buf_append(b, &tag, 1);
}

/* v as a varint into out; returns its length (10 at most). */
static size_t
varint(uint64_t v, unsigned char out[10])
{
	size_t	n = 0;

	while (v >= 0x80) {
		out[n++] = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	out[n++] = (unsigned char)v;
	return n;
}

static int
put_varint(struct buf *b, uint64_t v)
{
	unsigned char	tmp[10];

	return put(b, tmp, varint(v, tmp));
}

static int
put_integer(struct buf *b, lua_Integer i)
{
	uint64_t u = (uint64_t)i;

	return put_tag(b, 'i') == -1 ? -1 :
	    put_varint(b, (u << 1) ^ (uint64_t)(i < 0 ? -1 : 0));
}

static int	pack_at(lua_State *, int, struct buf *, int);

static int
pack_number(lua_State *L, int idx, struct buf *b)
{
	lua_Number	n;

	if (lua_isinteger(L, idx))
		return put_integer(b, lua_tointeger(L, idx));
	n = lua_tonumber(L, idx);
	if (isnan(n) || isinf(n))
		return put_tag(b, 'n');
	if (n == floor(n) && fabs(n) <= 9007199254740992.0)
		return put_integer(b, (lua_Integer)n);
	return put_tag(b, 'd') == -1 ? -1 : put(b, &n, sizeof(n));
}

/*
 * Write the varint v at b->data[at], where one byte was kept for it,
 * moving what follows when v needs more (a table of 128 keys or more).
 */
static int
patch_varint(struct buf *b, size_t at, uint64_t v)
{
	unsigned char	tmp[10];
	size_t		n = varint(v, tmp);

	if (n > 1) {
		if (buf_reserve(b, n - 1) == -1)
			return -1;
		memmove(b->data + at + n, b->data + at + 1, b->len - at - 1);
		b->len += n - 1;
		b->data[b->len] = '\0';
	}
	memcpy(b->data + at, tmp, n);
	return 0;
}

/*
 * A table: its count of pairs outside 1..narr goes before them, but is
 * only known after the walk, so it is written afterwards into the byte
 * kept for it: one walk of the table, not two, and the same bytes.
 */
static int
pack_table(lua_State *L, int idx, struct buf *b, int depth)
{
	lua_Integer	narr = (lua_Integer)lua_rawlen(L, idx), i, k;
	uint64_t	nrec = 0;
	size_t		at;

	if (!lua_checkstack(L, 4))
		return -1;
	if (put_tag(b, 'T') == -1 || put_varint(b, (uint64_t)narr) == -1)
		return -1;
	at = b->len;
	if (put_tag(b, 0) == -1)
		return -1;
	for (i = 1; i <= narr; i++) {
		lua_rawgeti(L, idx, i);
		if (pack_at(L, lua_gettop(L), b, depth + 1) == -1)
			return -1;
		lua_pop(L, 1);
	}
	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		if (lua_isinteger(L, -2) && (k = lua_tointeger(L, -2)) >= 1 &&
		    k <= narr) {
			lua_pop(L, 1);
			continue;
		}
		nrec++;
		if (pack_at(L, lua_gettop(L) - 1, b, depth + 1) == -1 ||
		    pack_at(L, lua_gettop(L), b, depth + 1) == -1)
			return -1;
		lua_pop(L, 1);
	}
	return patch_varint(b, at, nrec);
}

static int
pack_at(lua_State *L, int idx, struct buf *b, int depth)
{
	const char	*s;
	size_t		 len;

	if (depth > PACK_MAX_DEPTH)
		return -1;
	switch (lua_type(L, idx)) {
	case LUA_TSTRING:
		s = lua_tolstring(L, idx, &len);
		if (put_tag(b, 's') == -1 || put_varint(b, len) == -1)
			return -1;
		return put(b, s, len);
	case LUA_TNUMBER:
		return pack_number(L, idx, b);
	case LUA_TBOOLEAN:
		return put_tag(b, lua_toboolean(L, idx) ? 't' : 'f');
	case LUA_TTABLE:
		return pack_table(L, idx, b, depth);
	case LUA_TLIGHTUSERDATA:
		if (lua_touserdata(L, idx) == NULL)	/* cjson.null */
			return put_tag(b, 'n');
		return -1;
	default:
		return -1;
	}
}

/*
 * Building a packed table from C (envelope.c): pack_open writes the
 * table's head and keeps a byte for its count of keys, which pack_close
 * fills in; between them go key and value pairs.
 */
int
pack_start(struct buf *b)
{
	char	magic = PACK_MAGIC;

	buf_reset(b);
	/*
	 * An event packs to about 500 bytes: grow the buffer once, not 5
	 * times, and stay under glibc's large requests (1 KiB), each of which
	 * consolidates the fast bins first.
	 */
	return buf_reserve(b, 900) == -1 ? -1 : put(b, &magic, 1);
}

int
pack_open(struct buf *b, size_t *at)
{
	if (put_tag(b, 'T') == -1 || put_varint(b, 0) == -1)
		return -1;
	*at = b->len;
	return put_tag(b, 0);
}

int
pack_close(struct buf *b, size_t at, unsigned int nkeys)
{
	return patch_varint(b, at, nkeys);
}

int
pack_string(struct buf *b, const char *s, size_t len)
{
	if (put_tag(b, 's') == -1 || put_varint(b, len) == -1)
		return -1;
	return put(b, s, len);
}

int
pack_integer(struct buf *b, long long i)
{
	return put_integer(b, (lua_Integer)i);
}

/* The Lua value at idx, inside a table being built (depth 1). */
int
pack_lua(lua_State *L, int idx, struct buf *b)
{
	return pack_at(L, lua_absindex(L, idx), b, 1);
}

int
pack_value(lua_State *L, int idx, struct buf *b)
{
	idx = lua_absindex(L, idx);
	if (pack_start(b) == -1 || pack_at(L, idx, b, 0) == -1) {
		buf_reset(b);
		return -1;
	}
	return 0;
}

/* Unpacking: every read is bounds-checked; bad bytes are an error. */
struct reader {
	const unsigned char	*p, *end;
};

static int
get_varint(struct reader *r, uint64_t *v)
{
	int	shift;

	*v = 0;
	for (shift = 0; shift < 64 && r->p < r->end; shift += 7) {
		unsigned char c = *r->p++;

		*v |= (uint64_t)(c & 0x7f) << shift;
		if ((c & 0x80) == 0)
			return 0;
	}
	return -1;
}

static int
unpack_at(lua_State *L, struct reader *r, int depth)
{
	uint64_t	u, narr, nrec, i;
	lua_Number	n;

	/* room for a value: the caller's (a table's, below, or unpack_value) */
	if (depth > PACK_MAX_DEPTH || r->p >= r->end)
		return -1;
	switch (*r->p++) {
	case 'n':
		lua_pushlightuserdata(L, NULL);
		return 0;
	case 'f':
	case 't':
		lua_pushboolean(L, r->p[-1] == 't');
		return 0;
	case 'i':
		if (get_varint(r, &u) == -1)
			return -1;
		lua_pushinteger(L, (lua_Integer)((u >> 1) ^ (0 - (u & 1))));
		return 0;
	case 'd':
		if ((size_t)(r->end - r->p) < sizeof(n))
			return -1;
		memcpy(&n, r->p, sizeof(n));
		r->p += sizeof(n);
		lua_pushnumber(L, n);
		return 0;
	case 's':
		if (get_varint(r, &u) == -1 || u > (uint64_t)(r->end - r->p))
			return -1;
		lua_pushlstring(L, (const char *)r->p, (size_t)u);
		r->p += u;
		return 0;
	case 'T':
		/* each value takes a byte at least: no count beyond what is left */
		if (get_varint(r, &narr) == -1 || get_varint(r, &nrec) == -1 ||
		    narr > (uint64_t)(r->end - r->p) ||
		    nrec > (uint64_t)(r->end - r->p) || !lua_checkstack(L, 3))
			return -1;
		/* the table, then a key and its value at a time */
		lua_createtable(L, (int)narr, (int)nrec);
		for (i = 1; i <= narr; i++) {
			if (unpack_at(L, r, depth + 1) == -1)
				return -1;
			lua_rawseti(L, -2, (lua_Integer)i);
		}
		for (i = 0; i < nrec; i++) {
			if (unpack_at(L, r, depth + 1) == -1)
				return -1;
			if (lua_type(L, -1) != LUA_TSTRING &&
			    !lua_isinteger(L, -1))
				return -1;	/* a key JSON cannot have */
			if (unpack_at(L, r, depth + 1) == -1)
				return -1;
			lua_rawset(L, -3);
		}
		return 0;
	default:
		return -1;
	}
}

int
unpack_value(lua_State *L, const char *p, size_t len)
{
	struct reader	r;
	int		top = lua_gettop(L);

	if (!pack_is(p, len))
		return -1;
	r.p = (const unsigned char *)p + 1;
	r.end = (const unsigned char *)p + len;
	if (!lua_checkstack(L, 1) || unpack_at(L, &r, 0) == -1 ||
	    r.p != r.end) {
		lua_settop(L, top);
		return -1;
	}
	return 0;
}

int
pack_is(const char *p, size_t len)
{
	return len > 0 && (unsigned char)p[0] == PACK_MAGIC;
}
