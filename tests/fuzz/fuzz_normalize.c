/*
 * fuzz_normalize.c - libFuzzer target for the payload normalizer:
 * event_decode (src/event.c, lua/walua/normalize.lua), and
 * event_decode_params on the same body.
 *
 * Input: byte 0 picks the provider, byte 1 the delivery headers (FL_*
 * below); the Kapso event name and idempotency key, when byte 1 asks for
 * them, follow as one line each; the rest is the body, passed with its
 * exact length as the HTTP side passes it.
 *
 * Besides sanitizer reports, a failure is a broken promise of
 * event_decode: -2 ("walua itself failed") for an input this small means
 * normalize.lua raised, which the server would answer with a 503 the
 * provider retries forever; each event must carry what the inbox needs;
 * and an Insider or Meta body decodes to the same events whether the
 * Meta envelope is read in C (src/envelope.c) or by normalize.lua.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "event.h"
#include "fuzzlib.h"
#include "pack.h"

#define FL_BATCH	0x01	/* X-Webhook-Batch present ... */
#define FL_BATCH_TRUE	0x02	/* ... and "true" (else "false") */
#define FL_VERSION	0x04	/* X-Webhook-Payload-Version present ... */
#define FL_VERSION_V1	0x08	/* ... and "v1" (else "v2") */
#define FL_EVENT	0x10	/* X-Webhook-Event: a line of the input */
#define FL_IDEM		0x20	/* X-Idempotency-Key: a line of the input */
#define FL_UPPER	0x40	/* header values in upper case */

#define MAX_PARAMS	16	/* as oauth.c asks */

static const char *const providers[] = { "insider", "meta", "kapso" };

static lua_State	*L;		/* where packed events are unpacked */

static void
fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_normalize: %s: %s\n", what, detail);
	abort();
}

static void
check_events(const struct event_batch *b)
{
	const struct event	*e;
	int			 i;

	for (i = 0; i < b->n; i++) {
		e = &b->ev[i];
		if (strlen(e->id) != EVENT_ID_LEN)
			fail("bad event id", e->id);
		if (e->kind == NULL || e->dedup == NULL || e->body == NULL)
			fail("event without kind, dedup key or body", e->id);
		/* the worker must get back a table of the same kind */
		if (unpack_value(L, e->body, e->bodylen) == -1)
			fail("the packed event does not unpack", e->id);
		if (!lua_istable(L, -1) || lua_getfield(L, -1, "kind") !=
		    LUA_TSTRING || strcmp(lua_tostring(L, -1), e->kind) != 0)
			fail("the packed event is not the event", e->kind);
		lua_settop(L, 0);
	}
}

/* Deep equality of the values at a and b, integers and floats apart. */
static int
deep_equal(int a, int b, int depth)
{
	int	t = lua_type(L, a), same;

	if (t != lua_type(L, b) || depth > 200)
		return 0;
	if (t == LUA_TNUMBER && lua_isinteger(L, a) != lua_isinteger(L, b))
		return 0;
	if (t != LUA_TTABLE)
		return lua_rawequal(L, a, b);
	if (!lua_checkstack(L, 4))
		fail("deep_equal", "out of stack");
	lua_pushnil(L);
	while (lua_next(L, a) != 0) {
		lua_pushvalue(L, -2);
		lua_rawget(L, b);
		same = deep_equal(lua_gettop(L) - 1, lua_gettop(L), depth + 1);
		lua_pop(L, 2);
		if (!same) {
			lua_pop(L, 1);
			return 0;
		}
	}
	lua_pushnil(L);
	while (lua_next(L, b) != 0) {
		lua_pushvalue(L, -2);
		same = lua_rawget(L, a) != LUA_TNIL;
		lua_pop(L, 2);
		if (!same) {
			lua_pop(L, 1);
			return 0;
		}
	}
	return 1;
}

static int
same_str(const char *a, const char *b)
{
	return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

/* The same body with the envelope left to normalize.lua: the same events. */
static void
compare_with_lua(const char *provider, const struct event_headers *h,
    const char *body, size_t len, const struct event_batch *a)
{
	struct event_batch	 b;
	const struct event	*x, *y;
	char			 err[512];
	int			 i, rc;

	event_envelope_in_c = 0;
	rc = event_decode(provider, "/webhooks/fuzz", h, body, len, &b, err,
	    sizeof(err));
	event_envelope_in_c = 1;
	if (rc != 0)
		fail("normalize.lua refused what the C reader took", err);
	if (b.n != a->n)
		fail("the C reader and normalize.lua count apart", provider);
	for (i = 0; i < b.n; i++) {
		x = &a->ev[i];
		y = &b.ev[i];
		if (!same_str(x->kind, y->kind) ||
		    !same_str(x->conversation, y->conversation) ||
		    !same_str(x->dedup, y->dedup) ||
		    !same_str(x->message_id, y->message_id) ||
		    !same_str(x->status, y->status) || x->code != y->code)
			fail("the C reader and normalize.lua describe an "
			    "event apart", x->kind);
		if (unpack_value(L, x->body, x->bodylen) == -1 ||
		    unpack_value(L, y->body, y->bodylen) == -1 ||
		    !deep_equal(lua_gettop(L) - 1, lua_gettop(L), 0))
			fail("the C reader and normalize.lua build an event "
			    "apart", x->kind);
		lua_settop(L, 0);
	}
	event_batch_free(&b);
}

static void
decode_params(const char *body, size_t len)
{
	char	*keys[MAX_PARAMS], *values[MAX_PARAMS], err[256];
	int	 i, n;

	if (event_decode_params(body, len, keys, values, MAX_PARAMS, &n, err,
	    sizeof(err)) == -1)
		return;
	if (n < 0 || n > MAX_PARAMS)
		fail("event_decode_params count out of range", err);
	for (i = 0; i < n; i++) {
		if (keys[i] == NULL || values[i] == NULL)
			fail("event_decode_params gave a NULL pair", err);
		free(keys[i]);
		free(values[i]);
	}
}

static void
close_lua(void)
{
	lua_close(L);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct event_batch	b;
	char			err[256];

	/*
	 * The decoder state persists across inputs by design; make it now,
	 * so the first input is not charged with it, and close it at exit
	 * so LeakSanitizer's final check sees everything freed.
	 */
	if (event_decode("insider", "/fuzz", NULL, "{}", 2, &b, err,
	    sizeof(err)) != 0)
		fail("cannot start the decoder", err);
	event_batch_free(&b);
	atexit(event_shutdown);
	if ((L = luaL_newstate()) == NULL)
		fail("cannot make a Lua state", "out of memory");
	atexit(close_lua);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct event_headers	 h = { NULL, NULL, NULL, NULL };
	struct event_batch	 b;
	char			*event = NULL, *idem = NULL, err[512];
	const char		*provider;
	int			 flags, upper, rc;

	if (size < 2)
		return -1;	/* not worth keeping in the corpus */
	provider = providers[data[0] % 3];
	flags = data[1];
	data += 2;
	size -= 2;
	upper = flags & FL_UPPER;
	if (flags & FL_BATCH)
		h.batch = flags & FL_BATCH_TRUE ? (upper ? "TRUE" : "true") :
		    "false";
	if (flags & FL_VERSION)
		h.version = flags & FL_VERSION_V1 ? (upper ? "V1" : "v1") :
		    "v2";
	if (flags & FL_EVENT)
		h.event = event = fuzz_line(&data, &size);
	if (flags & FL_IDEM)
		h.idempotency = idem = fuzz_line(&data, &size);

	rc = event_decode(provider, "/webhooks/fuzz", &h, (const char *)data,
	    size, &b, err, sizeof(err));
	if (rc == 0) {
		check_events(&b);
		if (strcmp(provider, "kapso") != 0)
			compare_with_lua(provider, &h, (const char *)data, size,
			    &b);
	} else if (rc == -1) {
		if (err[0] == '\0')
			fail("rejected without a reason", provider);
	} else
		fail("event_decode failed on a small body", err);
	event_batch_free(&b);

	decode_params((const char *)data, size);
	free(event);
	free(idem);
	return 0;
}
