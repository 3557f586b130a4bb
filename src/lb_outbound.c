/*
 * lb_outbound.c - walua.outbound, what walua.whatsapp needs below Lua
 * (walua's own modules only; handlers cannot require it):
 *
 *   outbound.next_send() -> event id, n | nil   (the n-th send of this run)
 *   outbound.journal_get(id, n) -> message_id | nil, error | nil, found
 *   outbound.journal_begin(id, n, provider, phone, to) -> true | nil, err
 *   outbound.journal_answer(id, n, message_id | nil, error | nil)
 *       -> true | nil, err
 *   outbound.pace(number, per_second) -> ms to wait | nil, err
 *   outbound.count(family, labels)      (a counter of /metrics, +1)
 *
 * The journal lives in walua's database (kv.c, table sends), through the
 * process's walua.store connection: an entry is written before the
 * request goes out and answered after, so a run again returns the
 * message id instead of sending twice.  The pace is shared by every
 * worker (pace.c).
 */
#include "lb.h"

#include <stdlib.h>

#include "db.h"
#include "kv.h"
#include "lb_ctx.h"
#include "pace.h"

/* outbound.next_send() -> event id, n | nil outside a handler */
static int
lb_outbound_next_send(lua_State *L)
{
	struct lb_ctx *ctx = lb_ctx_of(L);

	if (ctx == NULL || ctx->ev_id == NULL) {
		lua_pushnil(L);
		return 1;
	}
	lua_pushstring(L, ctx->ev_id);
	lua_pushinteger(L, ++ctx->sends);
	return 2;
}

static struct db *
journal(lua_State *L)
{
	return lb_store_conn();
}

/* outbound.journal_get(id, n) -> message_id | nil, error | nil, found */
static int
lb_outbound_journal_get(lua_State *L)
{
	const char	*id = luaL_checkstring(L, 1);
	int		 n = (int)luaL_checkinteger(L, 2), rc;
	char		*mid, *err;
	struct db	*d;

	if ((d = journal(L)) == NULL)
		return lb_push_error(L, -1, NULL, "journal: no database");
	if ((rc = kv_send_get(d, id, n, &mid, &err)) == -1)
		return lb_push_error(L, -1, NULL, "journal: cannot read it");
	lua_pushstring(L, mid);		/* NULL pushes nil */
	lua_pushstring(L, err);
	lua_pushboolean(L, rc == 1);
	free(mid);
	free(err);
	return 3;
}

/* outbound.journal_begin(id, n, provider, phone, to) -> true | nil, err */
static int
lb_outbound_journal_begin(lua_State *L)
{
	const char	*id = luaL_checkstring(L, 1);
	int		 n = (int)luaL_checkinteger(L, 2);
	const char	*provider = luaL_checkstring(L, 3);
	const char	*phone = luaL_optstring(L, 4, NULL);
	const char	*to = luaL_optstring(L, 5, NULL);
	struct db	*d;

	if ((d = journal(L)) == NULL || kv_send_begin(d, id, n, provider,
	    phone, to, db_now_ms()) == -1)
		return lb_push_error(L, -1, NULL, "journal: cannot record the "
		    "send (it is not made)");
	lua_pushboolean(L, 1);
	return 1;
}

/* outbound.journal_answer(id, n, message_id, error) -> true | nil, err */
static int
lb_outbound_journal_answer(lua_State *L)
{
	const char	*id = luaL_checkstring(L, 1);
	int		 n = (int)luaL_checkinteger(L, 2);
	const char	*mid = luaL_optstring(L, 3, NULL);
	const char	*err = luaL_optstring(L, 4, NULL);
	struct db	*d;

	if ((d = journal(L)) == NULL || kv_send_answer(d, id, n, mid, err,
	    db_now_ms()) == -1)
		return lb_push_error(L, -1, NULL, "journal: cannot record the "
		    "answer");
	lua_pushboolean(L, 1);
	return 1;
}

/*
 * outbound.pace(number, per_second) -> ms to wait first | nil, err when
 * that is past the handler's budget (nothing reserved then).
 */
static int
lb_outbound_pace(lua_State *L)
{
	const char	*number = luaL_checkstring(L, 1);
	lua_Integer	 rate = luaL_checkinteger(L, 2);
	struct lb_ctx	*ctx = lb_ctx_of(L);
	int64_t		 max = INT64_MAX, wait;

	luaL_argcheck(L, rate > 0 && rate <= 100000, 2, "1..100000 a second");
	if (ctx != NULL && ctx->deadline_ns != 0)
		max = ctx->deadline_ns - lb_ctx_now_ns() - 500 * 1000000LL;
	if ((wait = pace_reserve(number, (int)rate, max)) < 0)
		return lb_push_error(L, -1, NULL, "the pace of sends for this "
		    "number would hold this one past the handler's budget");
	lua_pushinteger(L, (lua_Integer)((wait + 999999) / 1000000));
	return 1;
}

/* outbound.count(family, labels): +1 to a counter of /metrics. */
static int
lb_outbound_count(lua_State *L)
{
	lb_http_metric(luaL_checkstring(L, 1), luaL_optstring(L, 2, NULL), 1);
	return 0;
}

static const luaL_Reg outbound_funcs[] = {
	{ "next_send",		lb_outbound_next_send },
	{ "journal_get",	lb_outbound_journal_get },
	{ "journal_begin",	lb_outbound_journal_begin },
	{ "journal_answer",	lb_outbound_journal_answer },
	{ "pace",		lb_outbound_pace },
	{ "count",		lb_outbound_count },
	{ NULL,			NULL }
};

int
luaopen_walua_outbound(lua_State *L)
{
	luaL_newlib(L, outbound_funcs);
	return 1;
}
