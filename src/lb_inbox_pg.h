/* lb_inbox_pg.h - walua.inbox's functions on PostgreSQL (lb_inbox_pg.c). */
#ifndef LB_INBOX_PG_H
#define LB_INBOX_PG_H

struct db;

/* the columns of an event's row, for both databases */
#define LB_INBOX_COLUMNS "id, seq, provider, endpoint, kind, conversation," \
	" message_id, status, state, attempts, due_ms, last_error, acked_ms," \
	" done_ms"

void	lbpg_push_row(lua_State *, struct pg_result *, int row);
/* Each closes d, and pushes what its lb_inbox.c caller returns. */
int	lbpg_stats(lua_State *, struct db *);
int	lbpg_list(lua_State *, struct db *, int state, lua_Integer limit);
int	lbpg_show(lua_State *, struct db *, const char *id);
int	lbpg_replay(lua_State *, struct db *, const char *id, int resend);
int	lbpg_replay_dead(lua_State *, struct db *);

#endif
