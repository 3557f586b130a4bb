/*
 * db_pg.h - walua's database on PostgreSQL (database = "postgresql://..."):
 * connecting, the schema, statements prepared once per connection.
 */
#ifndef DB_PG_H
#define DB_PG_H

#include <stddef.h>

#include "pq.h"

struct db;

int		 db_is_pg(const char *database);
int		 pg_check_url(const char *url, char *err, size_t errlen);
int		 pg_open(struct db *, const char *url, int durability,
		    char *err, size_t errlen);
void		 pg_close(struct db *);
PGresult	*pg_run(struct db *, const char *sql, int n,
		    const char *const *values, const int *lengths,
		    const int *formats);
long		 pg_cmd(struct db *, const char *sql, int n,
		    const char *const *values);
int		 pg_alive(struct db *);
int		 pg_reconnect(struct db *);
const char	*pg_error(struct db *);

#endif
