/* db.h - one SQLite connection: pragmas, schema, cached statements. */
#ifndef DB_H
#define DB_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#define DB_CACHE	48

struct db {
	sqlite3		*h;
	struct {
		const char	*sql;		/* static text: compared by address */
		sqlite3_stmt	*st;
	} cache[DB_CACHE];
};

struct db	*db_open(const char *path, int durability, char *err,
		    size_t errlen);
void		 db_close(struct db *);
sqlite3_stmt	*db_prepare(struct db *, const char *sql);
int		 db_exec(struct db *, const char *sql);
const char	*db_error(struct db *);
int64_t		 db_now_ms(void);

#endif
