/*
 * oauth.c - the OAuth2 token endpoint Insider One calls (RFC 6749 §4.4
 * client credentials, §6 refresh), and the check of the access tokens it
 * issued, for `oauth2` endpoints.  Runs on the HTTP threads.
 *
 * Tokens are 256 random bits, handed out once and stored only as their
 * SHA-256 in the database (table oauth_tokens), so they stay valid across
 * a restart and a database leak does not leak them.  A token is stored
 * with its client id, its scopes and the fingerprint of the client's
 * secret (config.c), and is accepted only while the configuration still
 * has that client, with that secret, granting those scopes: removing a
 * client, changing its secret or taking a scope away (SIGHUP or restart)
 * ends its tokens.  Each HTTP thread has its own connection; tokens are
 * cached in memory with what they were issued for, so a delivery costs a
 * hash, a lookup and that check.  Refresh tokens come from the config and
 * are never rotated (Insider stores one).
 *
 * Repeated wrong secrets for one configured client id get 429 for a
 * while; the right secret is still accepted, so an attacker cannot lock
 * Insider out.  Failures are counted per configured client, plus one
 * count shared by every unknown id, so the table stays as small as the
 * configuration and made-up ids cannot push a real client's count out.
 */
#include "oauth.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mhd.h"
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "auth.h"
#include "config.h"
#include "db.h"
#include "event.h"
#include "hex.h"
#include "kv.h"
#include "log.h"
#include "metrics.h"

#define TOKEN_BYTES	32
#define FAIL_LIMIT	5		/* wrong secrets per client id ... */
#define FAIL_WINDOW_MS	60000		/* ... in this window, then 429 */
#define CACHE_MAX	4096

struct cached {
	char		 hash[65];
	char		 secret_fp[65];		/* as issued */
	int64_t		 expires_ms;
	const char	*scope;			/* in id[], after the id */
	struct cached	*next;
	char		 id[];			/* client id, NUL, scope, NUL */
};

struct failures {
	char		*client_id;		/* a configured client's */
	int		 count;
	int64_t		 since_ms;
	struct failures	*next;
};

static pthread_mutex_t	 mu = PTHREAD_MUTEX_INITIALIZER;
static struct cached	*cache;
static int		 ncache;
static struct failures	*fails;			/* per configured client */
static struct failures	 strangers;		/* every unknown client id */

static _Thread_local struct db	*tls_db;
static struct db	*all_dbs[256];
static int		 ndbs;

/* This thread's connection to the database; NULL when it cannot open. */
static struct db *
conn(const struct config *cfg)
{
	char	err[512];

	if (tls_db != NULL)
		return tls_db;
	if ((tls_db = db_open(cfg->database, cfg->durability, err,
	    sizeof(err))) == NULL) {
		log_kv(LOG_ERROR, "oauth: cannot open the database", "error",
		    err, NULL);
		return NULL;
	}
	pthread_mutex_lock(&mu);
	if (ndbs < (int)(sizeof(all_dbs) / sizeof(all_dbs[0])))
		all_dbs[ndbs++] = tls_db;
	pthread_mutex_unlock(&mu);
	return tls_db;
}

/* Forget every failure count (mu held). */
static void
fails_clear(void)
{
	struct failures	*f, *fn;

	for (f = fails; f != NULL; f = fn) {
		fn = f->next;
		free(f->client_id);
		free(f);
	}
	fails = NULL;
	memset(&strangers, 0, sizeof(strangers));
}

/* Empty the token cache (mu held): the database still has them all. */
static void
cache_clear(void)
{
	struct cached	*c, *cn;

	for (c = cache; c != NULL; c = cn) {
		cn = c->next;
		free(c);
	}
	cache = NULL;
	ncache = 0;
}

/* Close every thread's connection; after the HTTP threads stopped. */
void
oauth_shutdown(void)
{
	int	i;

	pthread_mutex_lock(&mu);
	for (i = 0; i < ndbs; i++)
		db_close(all_dbs[i]);
	ndbs = 0;
	cache_clear();
	fails_clear();
	pthread_mutex_unlock(&mu);
	tls_db = NULL;
}

/* --- throttling wrong secrets ------------------------------------- */

/*
 * The failure count of client id (mu held): its own when cfg has that
 * client, else the one shared by every unknown id.  With create, a
 * configured client without one gets one, and counts of clients cfg no
 * longer has are dropped; NULL when there is none (or no memory).
 */
static struct failures *
failures_of(const struct config *cfg, const char *id, int create)
{
	struct failures	*f, **fp;

	if (config_client(cfg, id) == NULL)
		return &strangers;
	for (f = fails; f != NULL; f = f->next)
		if (strcmp(f->client_id, id) == 0)
			return f;
	if (!create)
		return NULL;
	for (fp = &fails; (f = *fp) != NULL; ) {
		if (config_client(cfg, f->client_id) == NULL) {
			*fp = f->next;
			free(f->client_id);
			free(f);
		} else
			fp = &f->next;
	}
	if ((f = calloc(1, sizeof(*f))) == NULL ||
	    (f->client_id = strdup(id)) == NULL) {
		free(f);
		return NULL;
	}
	f->next = fails;
	fails = f;
	return f;
}

/* Seconds to wait when id is throttled, else 0. */
static int
throttled(const struct config *cfg, const char *id, int64_t now)
{
	struct failures	*f;
	int		 wait = 0;

	pthread_mutex_lock(&mu);
	if ((f = failures_of(cfg, id, 0)) != NULL &&
	    now - f->since_ms < FAIL_WINDOW_MS && f->count >= FAIL_LIMIT)
		wait = (int)((f->since_ms + FAIL_WINDOW_MS - now + 999) / 1000);
	pthread_mutex_unlock(&mu);
	return wait;
}

static void
note_failure(const struct config *cfg, const char *id, int64_t now)
{
	struct failures	*f;

	pthread_mutex_lock(&mu);
	if ((f = failures_of(cfg, id, 1)) != NULL) {
		if (now - f->since_ms >= FAIL_WINDOW_MS) {
			f->since_ms = now;
			f->count = 0;
		}
		f->count++;
	}
	pthread_mutex_unlock(&mu);
}

/* --- request parsing ------------------------------------------------- */

struct params {
	char	*k[16];
	char	*v[16];
	int	 n;
	int	 repeated;	/* a parameter came twice (RFC 6749 §3.2) */
};

static void
params_free(struct params *p)
{
	int	i;

	for (i = 0; i < p->n; i++) {
		free(p->k[i]);
		free(p->v[i]);
	}
	p->n = 0;
}

static const char *
param(const struct params *p, const char *k)
{
	int	i;

	for (i = 0; i < p->n; i++)
		if (strcmp(p->k[i], k) == 0)
			return p->v[i];
	return NULL;
}

static int
params_add(struct params *p, char *k, char *v)
{
	if (param(p, k) != NULL)
		p->repeated = 1;
	if (p->n == 16) {
		free(k);
		free(v);
		return -1;
	}
	p->k[p->n] = k;
	p->v[p->n++] = v;
	return 0;
}

/* Decode application/x-www-form-urlencoded text in place. */
static void
form_unescape(char *s)
{
	char	*p;

	for (p = s; *p; p++)
		if (*p == '+')
			*p = ' ';
	MHD_http_unescape(s);
}

static int
parse_form(const char *body, size_t len, struct params *p)
{
	char	*copy, *pair, *save = NULL, *eq, *k, *v;

	if ((copy = strndup(body, len)) == NULL)
		return -1;
	for (pair = strtok_r(copy, "&", &save); pair != NULL;
	    pair = strtok_r(NULL, "&", &save)) {
		if ((eq = strchr(pair, '=')) != NULL)
			*eq = '\0';
		k = strdup(pair);
		v = strdup(eq ? eq + 1 : "");
		if (k == NULL || v == NULL) {
			free(k);
			free(v);
			free(copy);
			return -1;
		}
		form_unescape(k);
		form_unescape(v);
		if (params_add(p, k, v) == -1) {
			free(copy);
			return -1;
		}
	}
	free(copy);
	return 0;
}

/*
 * HTTP Basic credentials (RFC 6749 §2.3.1: id and secret are
 * form-urlencoded before Base64).  Returns 1 with *id and *secret set
 * (caller frees), 0 when the header is not Basic, -1 when malformed.
 */
static int
parse_basic(const char *h, char **id, char **secret)
{
	unsigned char	*out;
	size_t		 len;
	int		 n;
	char		*colon;

	if (h == NULL || strncasecmp(h, "Basic ", 6) != 0)
		return 0;
	for (h += 6; *h == ' '; h++)
		;
	len = strlen(h);
	if (len == 0 || len % 4 != 0 || (out = malloc(len + 1)) == NULL)
		return -1;
	if ((n = EVP_DecodeBlock(out, (const unsigned char *)h, (int)len)) < 0) {
		free(out);
		return -1;
	}
	/* EVP_DecodeBlock counts the padding as bytes */
	while (len > 0 && h[len - 1] == '=') {
		len--;
		n--;
	}
	if (n < 0) {			/* "====": padding and nothing else */
		free(out);
		return -1;
	}
	out[n] = '\0';
	if (memchr(out, '\0', (size_t)n) != NULL ||
	    (colon = strchr((char *)out, ':')) == NULL) {
		free(out);
		return -1;
	}
	*colon = '\0';
	*id = strdup((char *)out);
	*secret = strdup(colon + 1);
	free(out);
	if (*id == NULL || *secret == NULL) {
		free(*id);
		free(*secret);
		return -1;
	}
	form_unescape(*id);
	form_unescape(*secret);
	return 1;
}

/* --- answers --------------------------------------------------------- */

static void
answer_error(struct oauth_answer *a, int status, const char *error,
    const char *description)
{
	a->status = status;
	buf_reset(&a->body);
	buf_puts(&a->body, "{\"error\":");
	buf_json_string(&a->body, error, strlen(error));
	if (description != NULL) {
		buf_puts(&a->body, ",\"error_description\":");
		buf_json_string(&a->body, description, strlen(description));
	}
	buf_puts(&a->body, "}");
	snprintf(a->reason, sizeof(a->reason), "%s", error);
}

/*
 * The granted scopes for the request, space-separated, into out: the
 * client's configured scopes when none were asked; -1 when one asked for
 * is not among them.
 */
static int
grant_scopes(const struct oauth_client *cl, const char *asked, struct buf *out)
{
	char	*copy, *s, *save = NULL;
	int	 i, found;

	if (asked == NULL || *asked == '\0') {
		for (i = 0; i < cl->nscopes; i++) {
			if (i > 0)
				buf_puts(out, " ");
			buf_puts(out, cl->scopes[i]);
		}
		return 0;
	}
	if ((copy = strdup(asked)) == NULL)
		return -1;
	for (s = strtok_r(copy, " ,", &save); s != NULL;
	    s = strtok_r(NULL, " ,", &save)) {
		for (found = 0, i = 0; i < cl->nscopes && !found; i++)
			found = strcmp(cl->scopes[i], s) == 0;
		if (!found) {
			free(copy);
			return -1;
		}
		if (out->len > 0)
			buf_puts(out, " ");
		buf_puts(out, s);
	}
	free(copy);
	return 0;
}

/* Store a new token's hash for cl; -1 when the database fails. */
static int
store_token(const struct config *cfg, const char *hash,
    const struct oauth_client *cl, const char *scope, int64_t expires_ms)
{
	struct db	*d = conn(cfg);

	if (d == NULL)
		return -1;
	return kv_token_put(d, hash, cl->id, scope, cl->secret_fp, expires_ms,
	    db_now_ms());
}

/*
 * Answer a POST to the token endpoint.  authz is the Authorization header
 * (or NULL), ctype the Content-Type; the answer goes in a (the caller
 * frees a->body).
 */
void
oauth_token(const struct config *cfg, const char *authz, const char *ctype,
    const char *body, size_t len, struct oauth_answer *a)
{
	struct params			 p = { .n = 0 };
	const struct oauth_client	*cl;
	const char			*grant, *id, *secret, *scope;
	char				*bid = NULL, *bsecret = NULL, err[256];
	unsigned char			 raw[TOKEN_BYTES];
	char				 token[2 * TOKEN_BYTES + 1], hash[65];
	struct buf			 granted = { 0 };
	int				 basic, wait, rc;
	int64_t				 now = db_now_ms();

	memset(a, 0, sizeof(*a));
	if (ctype != NULL && strncasecmp(ctype, "application/json", 16) == 0)
		rc = event_decode_params(body, len, p.k, p.v, 16, &p.n, err,
		    sizeof(err));
	else if (ctype == NULL || strncasecmp(ctype,
	    "application/x-www-form-urlencoded", 33) == 0)
		rc = parse_form(body, len, &p);
	else {
		answer_error(a, 400, "invalid_request", "send the parameters "
		    "form-encoded or as JSON");
		return;
	}
	if (rc == -1 || p.repeated) {
		answer_error(a, 400, "invalid_request", rc == -1 ?
		    "the body cannot be read" : "a parameter is repeated");
		goto done;
	}
	if ((basic = parse_basic(authz, &bid, &bsecret)) == -1) {
		answer_error(a, 401, "invalid_client", "malformed Basic "
		    "credentials");
		a->basic = 1;
		goto done;
	}
	if (basic && (param(&p, "client_id") != NULL ||
	    param(&p, "client_secret") != NULL)) {
		answer_error(a, 400, "invalid_request", "client credentials "
		    "in both the Authorization header and the body");
		goto done;
	}
	id = basic ? bid : param(&p, "client_id");
	secret = basic ? bsecret : param(&p, "client_secret");
	a->basic = basic;
	if (id == NULL || secret == NULL) {
		answer_error(a, 401, "invalid_client", "no client credentials");
		goto done;
	}
	snprintf(a->client, sizeof(a->client), "%s", id);
	cl = config_client(cfg, id);
	if (cl == NULL || !auth_equal(secret, strlen(secret), cl->secret,
	    strlen(cl->secret))) {
		if ((wait = throttled(cfg, id, now)) > 0) {
			answer_error(a, 429, "invalid_client", "too many "
			    "failed attempts for this client; retry later");
			a->retry_after = wait;
			snprintf(a->reason, sizeof(a->reason), "throttled");
			goto done;
		}
		note_failure(cfg, id, now);
		answer_error(a, 401, "invalid_client", "unknown client or "
		    "wrong secret");
		goto done;
	}
	if ((grant = param(&p, "grant_type")) == NULL) {
		answer_error(a, 400, "invalid_request", "grant_type is missing");
		goto done;
	}
	if (strcmp(grant, "refresh_token") == 0) {
		const char *rt = param(&p, "refresh_token");

		if (rt == NULL) {
			answer_error(a, 400, "invalid_request",
			    "refresh_token is missing");
			goto done;
		}
		if (cl->refresh_token == NULL || !auth_equal(rt, strlen(rt),
		    cl->refresh_token, strlen(cl->refresh_token))) {
			answer_error(a, 400, "invalid_grant", "unknown "
			    "refresh token");
			goto done;
		}
	} else if (strcmp(grant, "client_credentials") != 0) {
		answer_error(a, 400, "unsupported_grant_type", NULL);
		goto done;
	}
	scope = param(&p, "scope") ? param(&p, "scope") : param(&p, "scopes");
	if (grant_scopes(cl, scope, &granted) == -1) {
		answer_error(a, 400, "invalid_scope", "a scope asked for is not "
		    "granted to this client");
		goto done;
	}
	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		answer_error(a, 500, "server_error", NULL);
		goto done;
	}
	hex_encode(raw, sizeof(raw), token);
	auth_sha256_hex(token, strlen(token), hash);
	/* the expiry is fixed before the answer, so never shorter than told */
	if (store_token(cfg, hash, cl, granted.data ? granted.data : "",
	    now + (int64_t)cfg->token_ttl * 1000) == -1) {
		answer_error(a, 503, "temporarily_unavailable",
		    "the token could not be stored");
		a->retry_after = 2;
		goto done;
	}
	a->status = 200;
	buf_reset(&a->body);
	buf_printf(&a->body, "{\"access_token\":\"%s\",\"token_type\":"
	    "\"Bearer\",\"expires_in\":%d,\"scope\":", token, cfg->token_ttl);
	buf_json_string(&a->body, granted.data ? granted.data : "",
	    granted.len);
	if (strcmp(grant, "refresh_token") == 0) {
		buf_puts(&a->body, ",\"refresh_token\":");
		buf_json_string(&a->body, cl->refresh_token,
		    strlen(cl->refresh_token));
	}
	buf_puts(&a->body, "}");
	metrics_inc("walua_oauth_tokens_issued_total", NULL, 1);
	explicit_bzero(token, sizeof(token));
done:
	buf_free(&granted);
	params_free(&p);
	free(bid);
	if (bsecret != NULL)
		explicit_bzero(bsecret, strlen(bsecret));
	free(bsecret);
}

/* Is the space-separated scope list made only of cl's scopes? */
static int
scopes_granted(const struct oauth_client *cl, const char *scope)
{
	size_t	len;
	int	i, found;

	for (;;) {
		scope += strspn(scope, " ");
		if ((len = strcspn(scope, " ")) == 0)
			return 1;
		for (found = 0, i = 0; i < cl->nscopes && !found; i++)
			found = strlen(cl->scopes[i]) == len &&
			    memcmp(cl->scopes[i], scope, len) == 0;
		if (!found)
			return 0;
		scope += len;
	}
}

/*
 * Does a token issued to client id for scope, under the secret whose
 * fingerprint is secret_fp, still hold in cfg?
 */
static int
still_granted(const struct config *cfg, const char *id, const char *scope,
    const char *secret_fp)
{
	const struct oauth_client	*cl = config_client(cfg, id);

	return cl != NULL && auth_equal(secret_fp, strlen(secret_fp),
	    cl->secret_fp, strlen(cl->secret_fp)) && scopes_granted(cl, scope);
}

/* Remember a token read from the database (mu held); no memory: skip. */
static void
cache_add(const char *hash, const struct kv_token *t)
{
	struct cached	*c;
	size_t		 idlen = strlen(t->client_id);
	size_t		 scopelen = strlen(t->scope);

	if (ncache >= CACHE_MAX)
		cache_clear();
	if ((c = calloc(1, sizeof(*c) + idlen + scopelen + 2)) == NULL)
		return;
	memcpy(c->hash, hash, sizeof(c->hash));
	memcpy(c->secret_fp, t->secret_fp, sizeof(c->secret_fp));
	c->expires_ms = t->expires_ms;
	memcpy(c->id, t->client_id, idlen + 1);
	c->scope = c->id + idlen + 1;
	memcpy(c->id + idlen + 1, t->scope, scopelen + 1);
	c->next = cache;
	cache = c;
	ncache++;
}

/*
 * Is hash a live token that cfg still grants?  Cache first, then the
 * database.  A token stored without a secret fingerprint (by an older
 * walua) is bound, on its first use, to its client's secret of the time.
 */
static int
token_valid(const struct config *cfg, const char *hash, int64_t now)
{
	const struct oauth_client	*cl;
	struct cached			*c;
	struct kv_token			 t;
	struct db			*d;
	int				 found;

	pthread_mutex_lock(&mu);
	for (c = cache; c != NULL; c = c->next)
		if (strcmp(c->hash, hash) == 0) {
			found = c->expires_ms > now && still_granted(cfg,
			    c->id, c->scope, c->secret_fp);
			pthread_mutex_unlock(&mu);
			return found;
		}
	pthread_mutex_unlock(&mu);
	if ((d = conn(cfg)) == NULL || (found = kv_token_get(d, hash,
	    &t)) == -1)
		return -1;
	if (!found)
		return 0;
	if (t.unbound && t.expires_ms > now &&
	    (cl = config_client(cfg, t.client_id)) != NULL) {
		if (kv_token_bind(d, cl->id, cl->secret_fp) == -1) {
			kv_token_clear(&t);
			return -1;
		}
		memcpy(t.secret_fp, cl->secret_fp, sizeof(t.secret_fp));
		t.unbound = 0;
	}
	found = !t.unbound && t.expires_ms > now && still_granted(cfg,
	    t.client_id, t.scope, t.secret_fp);
	if (found) {
		pthread_mutex_lock(&mu);
		cache_add(hash, &t);
		pthread_mutex_unlock(&mu);
	}
	kv_token_clear(&t);
	return found;
}

/*
 * Check a delivery's Authorization header on an oauth2 endpoint.
 * Returns 1 for a live token issued here; 0 with *reason ("missing",
 * "invalid_token"); -1 when the database cannot answer.
 */
int
oauth_check(const struct config *cfg, const char *authz, const char **reason)
{
	const char	*tok;
	size_t		 len;
	char		 hash[65];
	int		 rc;

	if (authz == NULL || *authz == '\0') {
		*reason = "missing";
		return 0;
	}
	if ((tok = auth_bearer_token(authz, &len)) == NULL) {
		*reason = "invalid_token";
		return 0;
	}
	auth_sha256_hex(tok, len, hash);
	if ((rc = token_valid(cfg, hash, db_now_ms())) == 0)
		*reason = "invalid_token";
	return rc;
}
