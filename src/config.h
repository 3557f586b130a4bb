/* config.h - the configuration: load, check, share between threads. */
#ifndef CONFIG_H
#define CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"

enum { PROVIDER_INSIDER, PROVIDER_KAPSO, PROVIDER_META };
enum { AUTH_BEARER, AUTH_OAUTH2, AUTH_KAPSO, AUTH_META };
enum { DURABILITY_OFF, DURABILITY_NORMAL, DURABILITY_FULL };

struct endpoint {
	char		*path;
	int		 provider;		/* PROVIDER_* */
	const char	*provider_name;		/* static */
	int		 auth;			/* AUTH_* */
	char		*token;			/* bearer; secret */
	struct auth_digest token_digest;	/* of token; config_load only */
	char		*secret;		/* kapso; secret */
	char		*app_secret;		/* meta; secret */
	char		*verify_token;		/* meta; secret */
};

struct oauth_client {
	char		*id;
	char		*secret;		/* secret */
	char		*refresh_token;		/* secret; NULL: none */
	char		**scopes;		/* NULL-terminated */
	int		 nscopes;
	char		 secret_fp[65];		/* binds tokens to the secret */
};

struct console_user {
	char		*name;
	char		*password_hash;		/* passwd.c's format */
};

struct limits {
	size_t		 max_body;
	int		 handler_timeout_ms;
	int		 handler_memory_mb;
	int		 handler_concurrency;	/* events at once per worker */
	long		 max_queue;
	int		 retries;
	int		*backoff_ms;		/* nbackoff entries, last repeats */
	int		 nbackoff;
	int64_t		 dedup_ms;		/* dedup_days, in ms */
	int		 shutdown_timeout_ms;
};

struct config {
	char		*file;			/* NULL: the built-in demo */
	char		*listen;		/* "host:port" as written */
	char		*listen_host;
	int		 listen_port;
	char		*admin_listen;		/* NULL: no admin listener */
	char		*admin_host;
	int		 admin_port;
	char		*database;
	char		**handlers;		/* paths (embedded paths for the demo) */
	int		 nhandlers;
	int		 workers;
	int		 durability;
	int		 cluster_lease_s;	/* PostgreSQL: see inbox_pg.c */
	struct endpoint	*endpoints;
	int		 nendpoints;
	char		*oauth2_path;
	int		 token_ttl;		/* seconds */
	struct oauth_client *clients;
	int		 nclients;
	struct limits	 limits;
	int		 http_threads;
	int		 http_max_connections;
	int		 http_per_ip;
	int		 http_timeout_s;
	int		 http_header_timeout_s;
	int		 http_request_timeout_s;
	int		 log_level;
	char		*log_file;
	char		*console_path;		/* NULL: no console */
	struct console_user *console_users;
	int		 nconsole_users;
	char		*warnings;		/* lines for walua check, or "" */
	char		*json;			/* the checked config, for workers */
	size_t		 jsonlen;
	int		 refs;			/* extra references, beyond the
						 * creator's (under the lock) */
};

struct config	*config_load(const char *file, char *err, size_t errlen);
struct config	*config_from_json(const char *json, size_t len, char *err,
		    size_t errlen);
void		 config_free(struct config *);
const char	*config_default_file(void);

void		 config_set_current(struct config *);
struct config	*config_get(void);
void		 config_put(struct config *);

const struct endpoint *config_endpoint(const struct config *, const char *path);
const struct oauth_client *config_client(const struct config *, const char *id);
const struct console_user *config_console_user(const struct config *,
		    const char *name);
int		 config_backoff_ms(const struct config *, int attempt);

#endif
