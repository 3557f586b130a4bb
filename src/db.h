/*
 * db.h - one connection to walua's database: SQLite (a file, the
 * default) or PostgreSQL (a URL, db_pg.c); pragmas, schema, cached
 * statements.
 */
#ifndef DB_H
#define DB_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#define DB_CACHE	48

struct pg_conn;

struct db {
	sqlite3		*h;			/* SQLite, or NULL */
	struct pg_conn	*pg;			/* PostgreSQL, or NULL */
	struct {
		const char	*sql;		/* static text: compared by address */
		sqlite3_stmt	*st;
		int		 prepared;	/* PostgreSQL: on this connection */
	} cache[DB_CACHE];
	char		*url;			/* PostgreSQL: to reconnect */
	int		 durability;
	int		 in_tx;			/* PostgreSQL: BEGIN run */
	int64_t		 retry_ms;		/* PostgreSQL: next reconnect */
	char		 err[256];		/* PostgreSQL: the last error */
};

/*
 * SQLite (schema version 4, db.c): every event below this seq is done or
 * dead, so the pending ones are a range of the key.  0 if it is missing,
 * which only makes the range the whole table.
 */
#define DB_PENDING_FROM "coalesce((SELECT CAST(value AS INTEGER) FROM meta" \
	" WHERE key = 'pending_from'), 0)"
/* SQLite: an admin's replay lowers pending_from to what it marked */
#define DB_LOWER_PENDING_FROM "UPDATE meta SET value = min(" \
	DB_PENDING_FROM ", (SELECT min(seq) FROM events WHERE requeue = 1))" \
	" WHERE key = 'pending_from' AND EXISTS (SELECT 1 FROM events" \
	" WHERE requeue = 1)"

/* SQLite: the states of inbox (the view of db.c), as WHERE clauses */
#define DB_INBOX_PENDING "seq >= " DB_PENDING_FROM " AND state = 0"
#define DB_INBOX_DONE "state = 1"
#define DB_INBOX_DEAD "seq IN (SELECT seq FROM events WHERE state = 2)"
/* SQLite: the inbox's counts (lb_inbox_pg.h has PostgreSQL's) */
#define DB_INBOX_COUNTS "SELECT" \
	" (SELECT count(*) FROM inbox WHERE " DB_INBOX_PENDING ") AS pending," \
	" (SELECT count(*) FROM inbox WHERE " DB_INBOX_PENDING \
	"  AND due_ms IS NOT NULL) AS retrying," \
	" (SELECT count(*) FROM events WHERE state = 2) AS dead," \
	" (SELECT count(*) FROM done) +" \
	"  (SELECT count(*) FROM events WHERE state = 1) AS done," \
	" (SELECT min(acked_ms) FROM inbox WHERE " DB_INBOX_PENDING ")" \
	"  AS oldest_pending_ms," \
	" (SELECT max(acked_ms) FROM events) AS last_acked_ms"

struct db	*db_open(const char *path, int durability, char *err,
		    size_t errlen);
void		 db_close(struct db *);
sqlite3_stmt	*db_prepare(struct db *, const char *sql);
int		 db_exec(struct db *, const char *sql);
const char	*db_error(struct db *);
int64_t		 db_now_ms(void);

#endif
