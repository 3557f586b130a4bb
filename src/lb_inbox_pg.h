/* lb_inbox_pg.h - walua.inbox's functions on PostgreSQL (lb_inbox_pg.c). */
#ifndef LB_INBOX_PG_H
#define LB_INBOX_PG_H

struct db;

/* the columns of an event's row, for both databases */
#define LB_INBOX_COLUMNS "id, seq, provider, endpoint, kind, conversation," \
	" message_id, status, state, attempts, due_ms, last_error, acked_ms," \
	" done_ms"

/*
 * The inbox's counts on PostgreSQL (SQLite's: DB_INBOX_COUNTS, db.h);
 * the dedup keys held, for both: `walua run inbox stats` adds them, the
 * console's overview does not.
 */
#define LB_INBOX_COUNTS "SELECT" \
	" (SELECT count(*) FROM events WHERE state = 0) AS pending," \
	" (SELECT count(*) FROM events WHERE state = 0 AND due_ms IS NOT" \
	"  NULL) AS retrying," \
	" (SELECT count(*) FROM events WHERE state = 2) AS dead," \
	" (SELECT count(*) FROM events WHERE state = 1) AS done," \
	" (SELECT min(acked_ms) FROM events WHERE state = 0)" \
	"  AS oldest_pending_ms," \
	" (SELECT max(acked_ms) FROM events) AS last_acked_ms"
#define LB_INBOX_KEYS \
	", (SELECT count(*) FROM events WHERE dedup IS NOT NULL) +" \
	" (SELECT count(*) FROM events WHERE dedup2 IS NOT NULL) AS dedup_keys"

void	lbpg_push_row(lua_State *, struct pg_result *, int row);
void	lbpg_push_rows(lua_State *, struct pg_result *);
/* Each closes d, and pushes what its lb_inbox.c caller returns. */
int	lbpg_stats(lua_State *, struct db *);
int	lbpg_list(lua_State *, struct db *, int state, lua_Integer limit);
int	lbpg_show(lua_State *, struct db *, const char *id);
int	lbpg_replay(lua_State *, struct db *, const char *id, int resend);
int	lbpg_replay_dead(lua_State *, struct db *);

#endif
