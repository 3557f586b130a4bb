/*
 * kv.h - walua's shared state: walua.store, status ranks, the send journal
 * (and the OAuth2 tokens).  One small interface, so that a later backend (Redis,
 * shared by several walua instances) can replace the SQLite one while each
 * instance keeps its own inbox.
 */
#ifndef KV_H
#define KV_H

#include <stddef.h>
#include <stdint.h>

struct db;

/* An issued OAuth2 token as stored (kv_token_get). */
struct kv_token {
	char		*client_id;	/* caller frees (kv_token_clear) */
	char		*scope;		/* granted scopes, space-separated */
	char		 secret_fp[65];	/* the client's secret fingerprint
					 * when issued */
	int		 unbound;	/* stored without one (older walua) */
	int64_t		 expires_ms;
};

int	kv_get(struct db *, const char *key, int64_t now_ms, char **value);
int	kv_set(struct db *, const char *key, const char *value,
	    int64_t expires_ms);
int	kv_del(struct db *, const char *key);
int	kv_incr(struct db *, const char *key, int64_t by, int64_t expires_ms,
	    int64_t now_ms, int64_t *result);
int	kv_rank_of(const char *status);
int	kv_status_rank(struct db *, const char *message_id,
	    long long seq);
int	kv_status_set(struct db *, const char *message_id, int rank,
	    int64_t now_ms);
int	kv_token_put(struct db *, const char *hash, const char *client,
	    const char *scope, const char *secret_fp, int64_t expires_ms,
	    int64_t now_ms);
int	kv_token_get(struct db *, const char *hash, struct kv_token *);
void	kv_token_clear(struct kv_token *);
int	kv_token_bind(struct db *, const char *client, const char *secret_fp);
int	kv_send_get(struct db *, const char *event_id, int seq,
	    char **message_id, char **error);
int	kv_send_begin(struct db *, const char *event_id, int seq,
	    const char *provider, const char *phone, const char *recipient,
	    int64_t now_ms);
int	kv_send_answer(struct db *, const char *event_id, int seq,
	    const char *message_id, const char *error, int64_t now_ms);
int	kv_prune(struct db *, int64_t now_ms, int64_t keep_ms, int limit,
	    long *deleted);

#endif
