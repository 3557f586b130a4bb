/*
 * event.c - decode a webhook body into events, on the HTTP threads.
 *
 * Each HTTP thread lazily gets its own decoder: a private Lua state with
 * lua-cjson (depth limit fixed here, no script can change it) and
 * lua/walua/normalize.lua.  No handler code ever runs in these states; they
 * exist so the HTTP side can classify and normalize bodies with the same
 * cjson the handlers see, and hand each event on packed (pack.c): the
 * worker loads it without parsing JSON again.
 */
#include "event.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <lua-cjson.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "auth.h"
#include "buf.h"
#include "envelope.h"
#include "lalloc.h"
#include "luasrc.h"
#include "pack.h"

#define EVENT_MAX_DEPTH	64
#define EVENT_FIELDS	7	/* per event, from normalize.rows */

struct decoder {
	lua_State	*L;
	struct lalloc	 alloc;
	int		 decode;	/* ref: cjson.decode */
	int		 rows;		/* ref: normalize.rows */
	struct decoder	*next;
};

int	event_envelope_in_c = 1;

static _Thread_local struct decoder *tls_decoder;
static struct decoder	*all_decoders;
static pthread_mutex_t	 decoders_mu = PTHREAD_MUTEX_INITIALIZER;

/* Build a decoder state, protected (OOM here is an error, not an abort). */
static int
decoder_init(lua_State *L)
{
	struct decoder	*d = lua_touserdata(L, 1);

	/*
	 * Almost everything a body allocates is garbage once its events
	 * are copied out: the generational collector is made for that.
	 */
	lua_gc(L, LUA_GCGEN, 0, 0);
	luaL_openlibs(L);
	luaL_requiref(L, "cjson", luaopen_cjson, 1);
	lua_getfield(L, -1, "decode_max_depth");
	lua_pushinteger(L, EVENT_MAX_DEPTH);
	lua_call(L, 1, 0);
	lua_getfield(L, -1, "encode_max_depth");
	lua_pushinteger(L, EVENT_MAX_DEPTH + 8);
	lua_call(L, 1, 0);
	/*
	 * NaN and Infinity are not JSON: refuse them (400).  A number too
	 * big for a double (1e999) is JSON and decodes to inf: encode that
	 * as null rather than fail, which would answer 503 to a body that
	 * will never get better.
	 */
	lua_getfield(L, -1, "decode_invalid_numbers");
	lua_pushboolean(L, 0);
	lua_call(L, 1, 0);
	lua_getfield(L, -1, "encode_invalid_numbers");
	lua_pushliteral(L, "null");
	lua_call(L, 1, 0);
	lua_getfield(L, -1, "decode");
	d->decode = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pop(L, 1);
	if (luasrc_load(L, "walua.normalize") != LUA_OK)
		return lua_error(L);
	lua_call(L, 0, 1);
	lua_getfield(L, -1, "rows");
	d->rows = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pop(L, 1);
	return 0;
}

static struct decoder *
decoder_get(char *err, size_t errlen)
{
	struct decoder	*d;

	if (tls_decoder != NULL)
		return tls_decoder;
	if ((d = calloc(1, sizeof(*d))) == NULL ||
	    (d->L = lua_newstate(lalloc, &d->alloc)) == NULL) {
		free(d);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	lua_pushcfunction(d->L, decoder_init);
	lua_pushlightuserdata(d->L, d);
	if (lua_pcall(d->L, 1, 0, 0) != LUA_OK) {
		snprintf(err, errlen, "decoder: %s", lua_tostring(d->L, -1));
		lua_close(d->L);
		lalloc_drain(&d->alloc);
		free(d);
		return NULL;
	}
	pthread_mutex_lock(&decoders_mu);
	d->next = all_decoders;
	all_decoders = d;
	pthread_mutex_unlock(&decoders_mu);
	tls_decoder = d;
	return d;
}

static uint32_t		 id_prefix;
static pthread_once_t	 id_once = PTHREAD_ONCE_INIT;

static void
id_seed(void)
{
	uint32_t v;

	if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
		v = (uint32_t)getpid() ^ (uint32_t)time(NULL);
	id_prefix = v;
}

/*
 * A new event id: 12 hex digits of milliseconds since the epoch (so ids
 * sort by arrival), 8 of a per-process random prefix, 6 of a counter.
 */
void
event_new_id(char out[EVENT_ID_LEN + 1])
{
	static const char	 digits[] = "0123456789abcdef";
	static atomic_uint	 counter;
	struct timespec		 ts;
	unsigned long long	 ms, v;
	int			 i;

	pthread_once(&id_once, id_seed);
	clock_gettime(CLOCK_REALTIME, &ts);
	ms = (unsigned long long)ts.tv_sec * 1000 + (unsigned long long)
	    (ts.tv_nsec / 1000000);
	/* snprintf's "%012llx%08x%06x", by hand: it runs for every event */
	for (v = ms, i = 11; i >= 0; i--, v >>= 4)
		out[i] = digits[v & 15];
	for (v = id_prefix, i = 19; i >= 12; i--, v >>= 4)
		out[i] = digits[v & 15];
	for (v = atomic_fetch_add(&counter, 1), i = 25; i >= 20; i--, v >>= 4)
		out[i] = digits[v & 15];
	out[EVENT_ID_LEN] = '\0';
}

/*
 * Copy item idx of the list at the top of the stack into *out (a string,
 * or NULL for false).  Returns -1 only when memory runs out.  [-0, +0, -]
 */
static int
field(lua_State *L, int idx, char **out)
{
	const char	*s;
	size_t		 len;

	*out = NULL;
	lua_rawgeti(L, -1, idx);
	if (lua_type(L, -1) == LUA_TSTRING) {
		s = lua_tolstring(L, -1, &len);
		if ((*out = malloc(len + 1)) == NULL) {
			lua_pop(L, 1);
			return -1;
		}
		memcpy(*out, s, len + 1);
	}
	lua_pop(L, 1);
	return 0;
}

/*
 * Pack item idx of the list at the top of the stack (the event's table)
 * into e->body.  Returns -1 only when memory runs out: what normalize
 * builds is always packable.  [-0, +0, -]
 */
static int
pack_field(lua_State *L, int idx, struct event *e)
{
	struct buf	b = { NULL, 0, 0 };
	int		rc;

	lua_rawgeti(L, -1, idx);
	rc = pack_value(L, -1, &b);
	lua_pop(L, 1);
	if (rc == -1 || b.data == NULL) {
		buf_free(&b);
		return -1;
	}
	e->bodylen = b.len;
	e->body = buf_steal(&b);
	return 0;
}

/* envelope_read, in protected mode: [1] a struct fast, [2] the body. */
struct fast {
	const char		*provider, *endpoint;
	struct event_batch	*out;
	struct buf		 b;
	int			 rc;
};

static int
fast_read(lua_State *L)
{
	struct fast	*f = lua_touserdata(L, 1);

	f->rc = envelope_read(L, 2, f->provider, f->endpoint, f->out, &f->b);
	return 0;
}

/*
 * The events of the decoded body at the top of the stack, from
 * normalize.rows.  Returns 0, or -2 with err set.  [-0, +0, -]
 */
static int
rows(struct decoder *d, const char *provider, const char *endpoint,
    const struct event_headers *h, struct event_batch *out, char *err,
    size_t errlen)
{
	lua_State	*L = d->L;
	int		 n, i;

	lua_rawgeti(L, LUA_REGISTRYINDEX, d->rows);
	lua_pushstring(L, provider);
	lua_pushvalue(L, -3);
	lua_pushstring(L, endpoint);
	lua_createtable(L, 0, 4);
	if (h != NULL) {
		lua_pushstring(L, h->event);		/* NULL pushes nil */
		lua_setfield(L, -2, "event");
		lua_pushstring(L, h->batch);
		lua_setfield(L, -2, "batch");
		lua_pushstring(L, h->version);
		lua_setfield(L, -2, "version");
		lua_pushstring(L, h->idempotency);
		lua_setfield(L, -2, "idempotency");
	}
	if (lua_pcall(L, 4, 2, 0) != LUA_OK) {
		snprintf(err, errlen, "decoder: %s", lua_tostring(L, -1));
		lua_pop(L, 1);
		return -2;
	}
	n = (int)lua_tointeger(L, -2);
	if ((out->ev = calloc((size_t)n + 1, sizeof(*out->ev))) == NULL)
		goto oom;
	for (i = 0; i < n; i++) {
		struct event	*e = &out->ev[i];
		int		 base = EVENT_FIELDS * i;

		out->n = i + 1;
		if (field(L, base + 1, &e->kind) == -1 ||
		    field(L, base + 2, &e->conversation) == -1 ||
		    field(L, base + 3, &e->dedup) == -1 ||
		    field(L, base + 4, &e->message_id) == -1 ||
		    field(L, base + 5, &e->status) == -1 ||
		    pack_field(L, base + 6, e) == -1 || e->kind == NULL)
			goto oom;
		lua_rawgeti(L, -1, base + 7);
		e->code = lua_isinteger(L, -1) ? (long long)lua_tointeger(L,
		    -1) : 0;
		lua_pop(L, 1);
	}
	lua_pop(L, 2);
	return 0;
oom:
	lua_pop(L, 2);
	snprintf(err, errlen, "out of memory");
	return -2;
}

/*
 * The value on top, which cjson decoded from body, is an object: a table
 * with no array part, unless empty and written as one ({} and [] both
 * decode to an empty table).
 */
static int
is_object(lua_State *L, const char *body, size_t len)
{
	size_t	i;

	if (!lua_istable(L, -1))
		return 0;
	if (lua_rawlen(L, -1) > 0)
		return 0;
	for (i = 0; i < len && (body[i] == ' ' || body[i] == '\t' ||
	    body[i] == '\r' || body[i] == '\n'); i++)
		;
	return i == len || body[i] != '[';
}

/*
 * Decode body, a POST to endpoint from provider, into out (caller frees
 * with event_batch_free).  Returns 0; -1 when the body is bad input (not
 * JSON, too deep, not an object: err says why, for a 400); -2 when walua
 * itself failed (out of memory: err says so, for a 503).
 */
int
event_decode(const char *provider, const char *endpoint,
    const struct event_headers *h, const char *body, size_t len,
    struct event_batch *out, char *err, size_t errlen)
{
	struct decoder	*d;
	lua_State	*L;
	struct fast	 f;
	char		 body_hash[SHA256_DIGEST_LENGTH * 2 + 1];
	int		 top, i, rc = -2;

	memset(out, 0, sizeof(*out));
	if ((d = decoder_get(err, errlen)) == NULL)
		return -2;
	L = d->L;
	top = lua_gettop(L);
	/* cjson's decode called from here: what normalize.parse does */
	lua_rawgeti(L, LUA_REGISTRYINDEX, d->decode);
	lua_pushlstring(L, body, len);
	switch (lua_pcall(L, 1, 1, 0)) {
	case LUA_OK:
		break;
	case LUA_ERRRUN:
		snprintf(err, errlen, "body is not valid JSON: %s",
		    lua_tostring(L, -1));
		rc = -1;
		goto done;
	default:
		snprintf(err, errlen, "decoder: %s", lua_tostring(L, -1));
		goto done;
	}
	if (!is_object(L, body, len)) {
		snprintf(err, errlen, "body is not a JSON object");
		rc = -1;
		goto done;
	}
	f.rc = 0;
	if (event_envelope_in_c) {
		memset(&f, 0, sizeof(f));
		f.provider = provider;
		f.endpoint = endpoint;
		f.out = out;
		lua_pushcfunction(L, fast_read);
		lua_pushlightuserdata(L, &f);
		lua_pushvalue(L, -3);
		if (lua_pcall(L, 2, 0, 0) != LUA_OK)
			f.rc = -1;
		buf_free(&f.b);
		if (f.rc == -1)
			goto oom;
	}
	if (f.rc == 0 && rows(d, provider, endpoint, h, out, err,
	    errlen) == -2) {
		event_batch_free(out);
		goto done;
	}
	body_hash[0] = '\0';
	for (i = 0; i < out->n; i++) {
		struct event	*e = &out->ev[i];

		e->prior_rank = -1;
		event_new_id(e->id);
		if (e->dedup == NULL) {
			/* no natural id: the body's SHA-256 and the index */
			if (body_hash[0] == '\0')
				auth_sha256_hex(body, len, body_hash);
			if (asprintf(&e->dedup, "h:%s:%d", body_hash, i) == -1) {
				e->dedup = NULL;
				goto oom;
			}
		}
	}
	rc = 0;
	goto done;
oom:
	snprintf(err, errlen, "out of memory");
	event_batch_free(out);
done:
	lua_settop(L, top);
	/* a big body's garbage is not kept until the next major cycle */
	if (len > 256 * 1024)
		lua_gc(L, LUA_GCCOLLECT);
	return rc;
}

/* Free what e owns (not e itself). */
void
event_free(struct event *e)
{
	free(e->kind);
	free(e->conversation);
	free(e->dedup);
	free(e->message_id);
	free(e->status);
	free(e->body);
}

void
event_batch_free(struct event_batch *b)
{
	int	i;

	for (i = 0; b->ev != NULL && i < b->n; i++)
		event_free(&b->ev[i]);
	free(b->ev);
	b->ev = NULL;
	b->n = 0;
}

/* Close every decoder; only after the HTTP threads have stopped. */
void
event_shutdown(void)
{
	struct decoder	*d, *next;

	pthread_mutex_lock(&decoders_mu);
	for (d = all_decoders; d != NULL; d = next) {
		next = d->next;
		lua_close(d->L);
		lalloc_drain(&d->alloc);
		free(d);
	}
	all_decoders = NULL;
	pthread_mutex_unlock(&decoders_mu);
	tls_decoder = NULL;
}

/*
 * Decode a JSON object of parameters (an OAuth2 token request) into up to
 * max key/value pairs (caller frees each): strings as they are, numbers
 * as text, arrays of strings joined with spaces; other values are
 * skipped.  Returns 0, or -1 when the body is not a JSON object.
 */
int
event_decode_params(const char *body, size_t len, char **keys, char **values,
    int max, int *n, char *err, size_t errlen)
{
	struct decoder	*d;
	lua_State	*L;
	int		 top, rc = -1;

	*n = 0;
	if ((d = decoder_get(err, errlen)) == NULL)
		return -1;
	L = d->L;
	top = lua_gettop(L);
	lua_getglobal(L, "cjson");
	lua_getfield(L, -1, "decode");
	lua_pushlstring(L, body, len);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
		snprintf(err, errlen, "not a JSON object");
		goto done;
	}
	lua_pushnil(L);
	while (lua_next(L, -2) != 0 && *n < max) {
		if (lua_type(L, -2) == LUA_TSTRING) {
			luaL_Buffer	b;
			int		t = lua_type(L, -1), i;
			int		v = lua_gettop(L);	/* the buffer
								 * may push */

			luaL_buffinit(L, &b);
			if (t == LUA_TSTRING || t == LUA_TNUMBER) {
				lua_pushvalue(L, v);
				luaL_addvalue(&b);
			} else if (t == LUA_TTABLE) {
				/*
				 * No buffer call while the item is pushed
				 * but not yet added: the buffer's own box
				 * sits below it, and growing it then wrote
				 * into freed memory (found by fuzz_token).
				 */
				for (i = 1; ; i++) {
					int is_str = lua_rawgeti(L, v, i) ==
					    LUA_TSTRING;

					lua_pop(L, 1);
					if (!is_str)
						break;
					if (i > 1)
						luaL_addchar(&b, ' ');
					lua_rawgeti(L, v, i);
					luaL_addvalue(&b);
				}
			}
			luaL_pushresult(&b);
			if (t == LUA_TSTRING || t == LUA_TNUMBER ||
			    t == LUA_TTABLE) {
				keys[*n] = strdup(lua_tostring(L, -3));
				values[*n] = strdup(lua_tostring(L, -1));
				if (keys[*n] == NULL || values[*n] == NULL) {
					free(keys[*n]);
					free(values[*n]);
					lua_settop(L, top);
					snprintf(err, errlen, "out of memory");
					return -1;
				}
				(*n)++;
			}
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	rc = 0;
done:
	lua_settop(L, top);
	return rc;
}
