/*
 * envelope.c - Meta's webhook envelope read in C, from cjson's tables.
 *
 * Nearly every delivery from Insider or Meta is an envelope of messages
 * or statuses in the usual shape.  lua/walua/normalize.lua reads every
 * body walua accepts; for the envelopes in that shape this file builds
 * the same events and packs them (pack.h) straight from the decoded
 * tables, without the normalizer's interpreted walk and the event tables
 * it builds and throws away: about half of the HTTP thread's Lua time.
 *
 * The usual shape: strings where Meta sends strings (ids, timestamps as
 * decimal digits), no errors, message types text, button, interactive,
 * image, video, audio, document, sticker, location and reaction.  On anything else this file declines and normalize.lua
 * reads the body, so the rules for odd input live in one place.  Where
 * normalize.lua skips a value (an entry that is not an object), so does
 * this file.  Both are run on every fixture and compared event by event
 * (tests/unit/test_envelope.c), and on what the normalize fuzz target
 * makes of them.
 */
#include "envelope.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "buf.h"
#include "event.h"
#include "pack.h"

#define DECLINE	1		/* a shape left to normalize.lua */

/*
 * A string read from a decoded table.  It stays valid after its value is
 * popped: the table still holds it, and the body's tables stay on the
 * stack until the events are built.
 */
struct str {
	const char	*p;		/* NULL: none */
	size_t		 len;
};

/* The fields of one event, read before anything is built. */
struct fields {
	int		 status_kind;	/* 1: a status, 0: a message */
	int		 raw;		/* stack index of the message/status */
	int		 pricing;	/* stack index, or 0 */
	int		 media;		/* stack index of a media object, or 0 */
	int		 whole;		/* stack index of a location or a
					 * reaction, kept whole, or 0 */
	struct str	 type, id, from, text, reply_id, status, recipient,
			 name, ctx_from, ctx_id;
	int		 has_context;
	int		 has_ts;
	long long	 ts;
};

struct reader {
	lua_State		*L;
	const char		*provider, *endpoint;
	struct str		 key, pnid, display;
	struct event_batch	*out;
	int			 cap;
	struct buf		*b;
};

/* normalize.lua's idstr(t[k]) for strings: "" is none; not a string (nor
 * absent) declines. */
static int
id_field(lua_State *L, int t, const char *k, struct str *s)
{
	int	type = lua_getfield(L, t, k);

	s->p = NULL;
	s->len = 0;
	if (type == LUA_TSTRING)
		s->p = lua_tolstring(L, -1, &s->len);
	lua_pop(L, 1);
	if (type != LUA_TSTRING && type != LUA_TNIL)
		return DECLINE;
	if (s->len == 0)
		s->p = NULL;
	return 0;
}

/* normalize.lua's str(t[k]): a string, or none for anything else. */
static void
str_field(lua_State *L, int t, const char *k, struct str *s)
{
	s->p = NULL;
	s->len = 0;
	if (lua_getfield(L, t, k) == LUA_TSTRING)
		s->p = lua_tolstring(L, -1, &s->len);
	lua_pop(L, 1);
}

/* normalize.lua's tab(t[k]): 1 with the table pushed, 0 with nothing. */
static int
tab_field(lua_State *L, int t, const char *k)
{
	if (lua_getfield(L, t, k) == LUA_TTABLE)
		return 1;
	lua_pop(L, 1);
	return 0;
}

/* Whether t[k] is there (errors, which only normalize.lua reads). */
static int
has(lua_State *L, int t, const char *k)
{
	int	type = lua_getfield(L, t, k);

	lua_pop(L, 1);
	return type != LUA_TNIL;
}

/* normalize.lua's timestamp(t[k]) for Meta's own form, decimal digits. */
static int
time_field(lua_State *L, int t, const char *k, struct fields *f)
{
	struct str	s;
	size_t		i;
	int		type = lua_getfield(L, t, k);

	f->has_ts = 0;
	f->ts = 0;
	s.p = type == LUA_TSTRING ? lua_tolstring(L, -1, &s.len) : NULL;
	lua_pop(L, 1);
	if (type == LUA_TNIL)
		return 0;
	if (s.p == NULL || s.len == 0 || s.len > 18)
		return DECLINE;
	for (i = 0; i < s.len; i++) {
		if (s.p[i] < '0' || s.p[i] > '9')
			return DECLINE;
		f->ts = f->ts * 10 + (s.p[i] - '0');
	}
	f->has_ts = 1;
	return 0;
}

static int
same(const struct str *a, const struct str *b)
{
	if (a->p == NULL || b->p == NULL)
		return a->p == b->p;
	return a->len == b->len && memcmp(a->p, b->p, a->len) == 0;
}

/*
 * normalize.lua's contact_name: the profile name of the contact in
 * contacts (at index c) whose wa_id is from, or of the only contact.
 */
static int
contact_name(lua_State *L, int c, const struct str *from, struct str *name)
{
	struct str	wa;
	int		i, only = 0, top = lua_gettop(L);

	name->p = NULL;
	name->len = 0;
	if (lua_type(L, c) != LUA_TTABLE)
		return 0;
	if (lua_rawlen(L, c) == 1 && lua_rawgeti(L, c, 1) == LUA_TTABLE)
		only = lua_gettop(L);
	for (i = 1; lua_rawgeti(L, c, i) != LUA_TNIL; i++) {
		if (lua_type(L, -1) != LUA_TTABLE) {
			lua_pop(L, 1);
			continue;
		}
		if (id_field(L, -1, "wa_id", &wa) == DECLINE) {
			lua_settop(L, top);
			return DECLINE;
		}
		if (same(&wa, from)) {
			only = lua_gettop(L);
			break;
		}
		lua_pop(L, 1);
	}
	if (only != 0 && tab_field(L, only, "profile"))
		str_field(L, -1, "name", name);
	lua_settop(L, top);
	return 0;
}

static const char *const media_types[] = { "image", "video", "audio",
    "document", "sticker", NULL };
/* normalize.lua's media(): these fields of a media object, as they are */
static const char *const media_fields[] = { "id", "mime_type", "sha256",
    "filename", "caption", "url", "animated", "voice", NULL };

static int
is_one_of(const char *s, const char *const *list)
{
	for (; *list != NULL; list++)
		if (strcmp(s, *list) == 0)
			return 1;
	return 0;
}

/*
 * What a message says, for the types read here.  A media object, a
 * location or a reaction stays pushed for pack_event (f says where).
 */
static int
message_fields(lua_State *L, int m, int contacts, struct fields *f)
{
	int	body, top = lua_gettop(L), keep = top, rc = DECLINE;

	str_field(L, m, "type", &f->type);
	if (f->type.p == NULL || has(L, m, "errors") ||
	    id_field(L, m, "id", &f->id) || id_field(L, m, "from", &f->from) ||
	    time_field(L, m, "timestamp", f))
		return DECLINE;
	body = tab_field(L, m, f->type.p) ? lua_gettop(L) : 0;
	if (strcmp(f->type.p, "text") == 0) {
		if (body != 0)
			str_field(L, body, "body", &f->text);
	} else if (strcmp(f->type.p, "button") == 0) {
		if (body != 0) {
			str_field(L, body, "text", &f->text);
			if (id_field(L, body, "payload", &f->reply_id))
				goto out;
		}
	} else if (strcmp(f->type.p, "interactive") == 0) {
		if (body != 0 && (tab_field(L, body, "button_reply") ||
		    tab_field(L, body, "list_reply"))) {
			str_field(L, -1, "title", &f->text);
			if (id_field(L, -1, "id", &f->reply_id))
				goto out;
		}
	} else if (is_one_of(f->type.p, media_types)) {
		if (body != 0) {
			/* a number as the id: normalize.lua writes it out */
			if (lua_getfield(L, body, "id") == LUA_TNUMBER)
				goto out;
			lua_pop(L, 1);
			str_field(L, body, "caption", &f->text);
			f->media = keep = body;
		}
	} else if (strcmp(f->type.p, "location") == 0 ||
	    strcmp(f->type.p, "reaction") == 0) {
		if (body != 0)
			f->whole = keep = body;
	} else
		goto out;
	lua_settop(L, keep);
	if (tab_field(L, m, "context")) {
		f->has_context = 1;
		if (id_field(L, -1, "from", &f->ctx_from) ||
		    id_field(L, -1, "id", &f->ctx_id))
			goto out;
	}
	rc = contact_name(L, contacts, &f->from, &f->name);
out:
	lua_settop(L, rc == 0 ? keep : top);
	return rc;
}

static int
status_fields(lua_State *L, int s, struct fields *f)
{
	str_field(L, s, "status", &f->status);
	if (has(L, s, "errors") || id_field(L, s, "id", &f->id) ||
	    id_field(L, s, "recipient_id", &f->recipient) ||
	    time_field(L, s, "timestamp", f))
		return DECLINE;
	if (tab_field(L, s, "pricing"))
		f->pricing = lua_gettop(L);	/* the caller pops it */
	return 0;
}

/*
 * The n parts joined, parts of none skipped, into out (which a NUL
 * inside a part does not cut short); NULL when memory ran out.
 */
static char *
concat(const struct str *parts, int n, struct str *out)
{
	size_t	len = 0;
	char	*p, *o;
	int	i;

	for (i = 0; i < n; i++)
		len += parts[i].p != NULL ? parts[i].len : 0;
	if ((p = o = malloc(len + 1)) == NULL)
		return NULL;
	for (i = 0; i < n; i++)
		if (parts[i].p != NULL) {
			memcpy(o, parts[i].p, parts[i].len);
			o += parts[i].len;
		}
	*o = '\0';
	if (out != NULL) {
		out->p = p;
		out->len = len;
	}
	return p;
}

/* One key and string value, when the value is not none. */
static int
put_str(struct buf *b, unsigned int *n, const char *k, const struct str *v)
{
	if (v->p == NULL)
		return 0;
	(*n)++;
	return pack_string(b, k, strlen(k)) == -1 ||
	    pack_string(b, v->p, v->len) == -1 ? -1 : 0;
}

/* One key and the Lua value at idx, when idx is not 0. */
static int
put_lua(struct buf *b, unsigned int *n, const char *k, lua_State *L, int idx)
{
	if (idx == 0)
		return 0;
	(*n)++;
	return pack_string(b, k, strlen(k)) == -1 ||
	    pack_lua(L, idx, b) == -1 ? -1 : 0;
}

static int
put_cstr(struct buf *b, unsigned int *n, const char *k, const char *v)
{
	struct str	s = { v, v != NULL ? strlen(v) : 0 };

	return put_str(b, n, k, &s);
}

/* A media object's fields, those present and not null (cjson.null). */
static int
pack_media(lua_State *L, int body, struct buf *b)
{
	size_t		at;
	unsigned int	n = 0;
	int		i, t;

	if (pack_string(b, "media", 5) == -1 || pack_open(b, &at) == -1)
		return -1;
	for (i = 0; media_fields[i] != NULL; i++) {
		t = lua_getfield(L, body, media_fields[i]);
		if (t != LUA_TNIL && (t != LUA_TLIGHTUSERDATA ||
		    lua_touserdata(L, -1) != NULL)) {
			n++;
			if (pack_string(b, media_fields[i],
			    strlen(media_fields[i])) == -1 ||
			    pack_lua(L, -1, b) == -1)
				return -1;
		}
		lua_pop(L, 1);
	}
	return pack_close(b, at, n);
}

/* The event's table, as normalize.lua builds it, packed into r->b. */
static int
pack_event(struct reader *r, const struct fields *f, const struct str *conv)
{
	struct buf	*b = r->b;
	lua_State	*L = r->L;
	size_t		 at, cat;
	unsigned int	 n = 0, cn = 0;

	if (pack_start(b) == -1 || pack_open(b, &at) == -1 ||
	    put_cstr(b, &n, "provider", r->provider) == -1 ||
	    put_cstr(b, &n, "endpoint", r->endpoint) == -1 ||
	    put_cstr(b, &n, "kind", f->status_kind ? "status" : "message") ==
	    -1 || put_str(b, &n, "key", &r->key) == -1 ||
	    put_lua(b, &n, "raw", L, f->raw) == -1 ||
	    put_str(b, &n, "phone_number_id", &r->pnid) == -1 ||
	    put_str(b, &n, "display_phone_number", &r->display) == -1 ||
	    put_str(b, &n, "message_id", &f->id) == -1 ||
	    put_str(b, &n, "conversation", conv) == -1)
		return -1;
	if (f->has_ts) {
		n++;
		if (pack_string(b, "timestamp", 9) == -1 ||
		    pack_integer(b, f->ts) == -1)
			return -1;
	}
	if (f->status_kind) {
		if (put_str(b, &n, "status", &f->status) == -1 ||
		    put_str(b, &n, "recipient", &f->recipient) == -1 ||
		    put_lua(b, &n, "pricing", L, f->pricing) == -1)
			return -1;
		return pack_close(b, at, n);
	}
	if (put_str(b, &n, "type", &f->type) == -1 ||
	    put_str(b, &n, "text", &f->text) == -1 ||
	    put_str(b, &n, "reply_id", &f->reply_id) == -1 ||
	    put_str(b, &n, "from", &f->from) == -1 ||
	    put_str(b, &n, "name", &f->name) == -1)
		return -1;
	if (f->media != 0) {
		n++;
		if (pack_media(L, f->media, b) == -1)
			return -1;
	}
	/* ev.location, ev.reaction: named after the type */
	if (put_lua(b, &n, f->type.p, L, f->whole) == -1)
		return -1;
	if (f->has_context) {
		n++;
		if (pack_string(b, "context", 7) == -1 ||
		    pack_open(b, &cat) == -1 ||
		    put_str(b, &cn, "from", &f->ctx_from) == -1 ||
		    put_str(b, &cn, "id", &f->ctx_id) == -1 ||
		    pack_close(b, cat, cn) == -1)
			return -1;
	}
	return pack_close(b, at, n);
}

/* Add the event f describes to r->out: what the inbox keeps of it. */
static int
add_event(struct reader *r, const struct fields *f)
{
	struct event_batch	*out = r->out;
	struct event		*e, *grown;
	const struct str	*wa = f->status_kind ? &f->recipient : &f->from;
	/* normalize.lua's conversation and dedup_key */
	struct str		 conv[3] = { r->pnid, { ":", 1 }, *wa };
	struct str		 key[4] = { { f->status_kind ? "s:" : "m:", 2 },
				     f->id, { ":", 1 }, f->status };
	struct str		 joined = { NULL, 0 };

	if (out->n == r->cap) {
		r->cap = r->cap == 0 ? 4 : r->cap * 2;
		if ((grown = realloc(out->ev, (size_t)r->cap *
		    sizeof(*grown))) == NULL)
			return -1;
		out->ev = grown;
	}
	e = &out->ev[out->n++];
	memset(e, 0, sizeof(*e));
	if (r->pnid.p == NULL)
		conv[1].p = NULL;
	if (wa->p != NULL && (e->conversation = concat(conv, 3, &joined)) ==
	    NULL)
		return -1;
	if ((e->kind = strdup(f->status_kind ? "status" : "message")) == NULL)
		return -1;
	if (f->id.p != NULL && (e->message_id = concat(&f->id, 1, NULL)) == NULL)
		return -1;
	if (f->id.p != NULL && (!f->status_kind || f->status.p != NULL) &&
	    (e->dedup = concat(key, f->status_kind ? 4 : 2, NULL)) == NULL)
		return -1;
	if (f->status_kind && f->status.p != NULL &&
	    (e->status = concat(&f->status, 1, NULL)) == NULL)
		return -1;
	if (pack_event(r, f, &joined) == -1 || r->b->data == NULL)
		return -1;
	e->bodylen = r->b->len;
	e->body = buf_steal(r->b);
	return 0;
}

/* One change of an entry: its messages and statuses. */
static int
change(struct reader *r, int c)
{
	lua_State	*L = r->L;
	struct fields	 f;
	int		 value, list, contacts, i, k, n0 = r->out->n, rc;
	struct str	 field;

	str_field(L, c, "field", &field);
	if (field.p == NULL || strcmp(field.p, "messages") != 0 ||
	    !tab_field(L, c, "value"))
		return DECLINE;
	value = lua_gettop(L);
	if (has(L, value, "errors"))
		return DECLINE;
	r->pnid.p = r->display.p = NULL;
	if (tab_field(L, value, "metadata")) {
		if (id_field(L, -1, "phone_number_id", &r->pnid) ||
		    (r->pnid.p == NULL && id_field(L, -1,
		    "display_phone_number_id", &r->pnid)) ||
		    id_field(L, -1, "display_phone_number", &r->display))
			return DECLINE;
		lua_pop(L, 1);
	}
	lua_getfield(L, value, "contacts");
	contacts = lua_gettop(L);
	/* the messages first, then the statuses, as normalize.lua */
	for (k = 0; k < 2; k++) {
		if (!tab_field(L, value, k ? "statuses" : "messages"))
			continue;
		list = lua_gettop(L);
		for (i = 1; lua_rawgeti(L, list, i) != LUA_TNIL; i++) {
			if (lua_type(L, -1) == LUA_TTABLE) {
				memset(&f, 0, sizeof(f));
				f.raw = lua_gettop(L);
				f.status_kind = k;
				rc = k ? status_fields(L, f.raw, &f) :
				    message_fields(L, f.raw, contacts, &f);
				if (rc != 0 || (rc = add_event(r, &f)) != 0)
					return rc;
			}
			lua_settop(L, list);
		}
		lua_pop(L, 1);
	}
	lua_settop(L, c);
	/* a change with nothing in it is an "unknown" event */
	return r->out->n == n0 ? DECLINE : 0;
}

int
envelope_read(lua_State *L, int idx, const char *provider,
    const char *endpoint, struct event_batch *out, struct buf *b)
{
	struct reader	 r;
	struct str	 object;
	int		 body = lua_absindex(L, idx), top = lua_gettop(L);
	int		 entries, entry, changes, i, j, rc = DECLINE;

	memset(out, 0, sizeof(*out));
	memset(&r, 0, sizeof(r));
	r.L = L;
	r.provider = provider;
	r.endpoint = endpoint;
	r.out = out;
	r.b = b;
	/* Kapso's raw Meta forwards carry its event name: normalize.lua's */
	if (strcmp(provider, "kapso") == 0)
		return 0;
	if (!lua_checkstack(L, 24))
		return -1;
	str_field(L, body, "object", &object);
	if (object.p == NULL || strcmp(object.p, "whatsapp_business_account")
	    != 0 || id_field(L, body, "key", &r.key))
		goto done;
	if (!tab_field(L, body, "entry"))
		goto done;
	entries = lua_gettop(L);
	for (i = 1; lua_rawgeti(L, entries, i) != LUA_TNIL; i++) {
		entry = lua_gettop(L);
		if (lua_type(L, entry) == LUA_TTABLE &&
		    tab_field(L, entry, "changes")) {
			changes = lua_gettop(L);
			for (j = 1; lua_rawgeti(L, changes, j) != LUA_TNIL;
			    j++) {
				rc = lua_type(L, -1) != LUA_TTABLE ? DECLINE :
				    change(&r, lua_gettop(L));
				if (rc != 0)
					goto done;
				lua_pop(L, 1);
			}
		}
		lua_settop(L, entry - 1);
	}
	rc = out->n > 0 ? 0 : DECLINE;	/* else normalize's "unknown" */
done:
	lua_settop(L, top);
	if (rc == 0)
		return 1;
	event_batch_free(out);
	memset(out, 0, sizeof(*out));
	return rc == DECLINE ? 0 : -1;
}
