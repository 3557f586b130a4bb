/* kv_pg.h - kv.h's functions on PostgreSQL (kv_pg.c); kv.c calls them. */
#ifndef KV_PG_H
#define KV_PG_H

#include <stdint.h>

struct db;
struct kv_token;

int	kvpg_get(struct db *, const char *, int64_t, char **);
int	kvpg_set(struct db *, const char *, const char *, int64_t);
int	kvpg_del(struct db *, const char *);
int	kvpg_incr(struct db *, const char *, int64_t, int64_t, int64_t,
	    int64_t *);
int	kvpg_token_put(struct db *, const char *, const char *, const char *,
	    const char *, int64_t, int64_t);
int	kvpg_token_get(struct db *, const char *, struct kv_token *);
int	kvpg_token_bind(struct db *, const char *, const char *);
int	kvpg_status_rank(struct db *, const char *);
int	kvpg_status_set(struct db *, const char *, int, int64_t);
int	kvpg_send_get(struct db *, const char *, int, char **, char **);
int	kvpg_send_begin(struct db *, const char *, int, const char *,
	    const char *, const char *, int64_t);
int	kvpg_send_answer(struct db *, const char *, int, const char *,
	    const char *, int64_t);
int	kvpg_prune(struct db *, int64_t, int64_t, int, long *);

#endif
