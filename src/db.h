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

struct db	*db_open(const char *path, int durability, char *err,
		    size_t errlen);
void		 db_close(struct db *);
sqlite3_stmt	*db_prepare(struct db *, const char *sql);
int		 db_exec(struct db *, const char *sql);
const char	*db_error(struct db *);
int64_t		 db_now_ms(void);

#endif
