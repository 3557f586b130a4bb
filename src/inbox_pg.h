/*
 * inbox_pg.h - the inbox's statements on PostgreSQL, and what several
 * instances sharing one database need: instances, leases, claims, the
 * listener that hears of new events (inbox_pg.c).  For inbox.c only.
 */
#ifndef INBOX_PG_H
#define INBOX_PG_H

#include <stdint.h>

#include "event.h"

struct db;

int	ipg_insert(struct db *, const char *provider, const char *endpoint,
	    const struct event *, const char *key, const char *key2,
	    int64_t now);
int	ipg_lock_keys(struct db *, const char *keys);
int	ipg_release_expired(struct db *, const char *key, const char *key2,
	    int64_t since);
int	ipg_outcome(struct db *, int done_retry_dead, const char *id,
	    int attempts, int64_t ms, const char *error);
long	ipg_count_dead(struct db *);
int	ipg_probe(struct db *);
int	ipg_join(struct db *, const char *me, int lease_ms);
int	ipg_takeover(struct db *, const char *me, int lease_ms);
long	ipg_claim(struct db *, const char *me);
struct pg_result	*ipg_claim_take(struct db *, const char *me);
long	ipg_claim_queue(struct pg_result *);
int	ipg_unowned(struct db *);
void	ipg_leave(struct db *, const char *me);
int	ipg_listen_start(const char *url, int writer_pid, void (*wake)(void),
	    char *err, size_t errlen);
void	ipg_listen_self(int writer_pid);
void	ipg_listen_stop(void);

#endif
