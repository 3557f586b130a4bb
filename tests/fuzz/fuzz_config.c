/*
 * fuzz_config.c - libFuzzer target for the configuration loader
 * (config_load in src/config.c, lua/walua/config.lua).
 *
 * Input: a configuration file, written to a scratch folder and loaded
 * from there.  A configuration is Lua code written by the operator, so an
 * endless loop or a huge string in it is not a walua bug: the states get
 * an instruction budget and a memory cap (fuzzlib.c) that turn those into
 * load errors instead of libFuzzer timeouts and out-of-memory reports.
 *
 * Besides sanitizer reports, a loaded configuration must come back the
 * same from its JSON (config_from_json), which is what worker processes
 * read: config.c promises that both sides agree on every value.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzzlib.h"

/*
 * A real configuration takes well under 10^5 instructions to run and
 * check, and a few hundred KiB.
 */
#define BUDGET		2000000
#define MEMORY		(64 * 1024 * 1024)

static char	*path;

static void
fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_config: %s: %s\n", what, detail ? detail :
	    "(null)");
	abort();
}

/* Equal strings, NULL only equal to NULL. */
static int
same(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Report the first field on which the worker's copy w differs from c. */
static void
compare(const struct config *c, const struct config *w)
{
	int	i, j;

#define FIELD(f) do {							\
	if (!(f))							\
		fail("the workers would read another value", #f);	\
} while (0)
	FIELD(same(c->listen, w->listen));
	FIELD(same(c->listen_host, w->listen_host));
	FIELD(c->listen_port == w->listen_port);
	FIELD(same(c->admin_listen, w->admin_listen));
	FIELD(same(c->admin_host, w->admin_host));
	FIELD(c->admin_port == w->admin_port);
	FIELD(same(c->database, w->database));
	FIELD(c->workers == w->workers);
	FIELD(c->durability == w->durability);
	FIELD(c->nhandlers == w->nhandlers);
	for (i = 0; i < c->nhandlers; i++)
		FIELD(same(c->handlers[i], w->handlers[i]));
	FIELD(c->nendpoints == w->nendpoints);
	for (i = 0; i < c->nendpoints; i++) {
		const struct endpoint *a = &c->endpoints[i];
		const struct endpoint *b = &w->endpoints[i];

		FIELD(same(a->path, b->path));
		FIELD(a->provider == b->provider);
		FIELD(a->auth == b->auth);
		FIELD(same(a->token, b->token));
		FIELD(same(a->secret, b->secret));
		FIELD(same(a->app_secret, b->app_secret));
		FIELD(same(a->verify_token, b->verify_token));
	}
	FIELD(same(c->oauth2_path, w->oauth2_path));
	FIELD(c->token_ttl == w->token_ttl);
	FIELD(c->nclients == w->nclients);
	for (i = 0; i < c->nclients; i++) {
		const struct oauth_client *a = &c->clients[i];
		const struct oauth_client *b = &w->clients[i];

		FIELD(same(a->id, b->id));
		FIELD(same(a->secret, b->secret));
		FIELD(same(a->refresh_token, b->refresh_token));
		FIELD(a->nscopes == b->nscopes);
		for (j = 0; j < a->nscopes; j++)
			FIELD(same(a->scopes[j], b->scopes[j]));
	}
	FIELD(c->limits.max_body == w->limits.max_body);
	FIELD(c->limits.handler_timeout_ms == w->limits.handler_timeout_ms);
	FIELD(c->limits.handler_memory_mb == w->limits.handler_memory_mb);
	FIELD(c->limits.handler_concurrency ==
	    w->limits.handler_concurrency);
	FIELD(c->limits.max_queue == w->limits.max_queue);
	FIELD(c->limits.retries == w->limits.retries);
	FIELD(c->limits.nbackoff == w->limits.nbackoff);
	for (i = 0; i < c->limits.nbackoff; i++)
		FIELD(c->limits.backoff_ms[i] == w->limits.backoff_ms[i]);
	FIELD(c->limits.dedup_ms == w->limits.dedup_ms);
	FIELD(c->limits.shutdown_timeout_ms ==
	    w->limits.shutdown_timeout_ms);
	FIELD(c->http_threads == w->http_threads);
	FIELD(c->http_max_connections == w->http_max_connections);
	FIELD(c->http_per_ip == w->http_per_ip);
	FIELD(c->http_timeout_s == w->http_timeout_s);
	FIELD(c->log_level == w->log_level);
	FIELD(same(c->log_file, w->log_file));
#undef FIELD
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_lua_budget = BUDGET;
	fuzz_lua_memory = MEMORY;
	path = fuzz_path("walua.conf.lua");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config	*c, *w;
	char		 err[1024];

	fuzz_write(path, data, size);
	err[0] = '\0';
	if ((c = config_load(path, err, sizeof(err))) == NULL) {
		if (err[0] == '\0')
			fail("refused without a reason", path);
		return 0;
	}
	if (c->listen == NULL || c->listen_host == NULL ||
	    c->database == NULL || c->oauth2_path == NULL || c->json == NULL)
		fail("loaded without a required value", c->json);
	if ((w = config_from_json(c->json, c->jsonlen, err,
	    sizeof(err))) == NULL)
		fail("the workers could not read it", err);
	compare(c, w);
	config_free(w);
	config_free(c);
	return 0;
}
