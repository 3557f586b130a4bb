/*
 * console.c - the operator's console over HTTP: login, sessions, CSRF,
 * lockout, and the answers' headers; the pages themselves are rendered
 * by lua/walua/console.lua (lb_console.c).
 *
 * Nothing but the login page and the stylesheet is served without a
 * session: a page answers 303 to the login, /api/... 401.  Every POST
 * but the login needs the session's CSRF token (form field "csrf" or
 * header X-CSRF-Token): 403 without it, whatever the cookie.  The
 * password is checked outside any lock (PBKDF2 takes a while) and never
 * logged: a login is logged with the user name, the client address and
 * the outcome.  Every answer forbids framing and anything not from the
 * console itself (Content-Security-Policy: default-src 'self').
 */
#include "console.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <openssl/crypto.h>

#include "buf.h"
#include "config.h"
#include "console_lua.h"
#include "console_session.h"
#include "log.h"
#include "luasrc.h"
#include "passwd.h"

#define COOKIE		"walua_console"
#define MAX_FORM	65536		/* a console form is a few fields */
#define CSS_PATH	"lua/walua/console/style.css"

struct creq {
	struct buf	 body;
	int		 too_large;
};

/* Whether this listener (admin or not) serves url as the console's. */
int
console_serves(const struct config *cfg, const char *url, int admin)
{
	size_t	n;

	if (cfg == NULL || cfg->console_path == NULL ||
	    (cfg->admin_listen != NULL) != (admin != 0))
		return 0;
	n = strlen(cfg->console_path);
	return strncmp(url, cfg->console_path, n) == 0 &&
	    (url[n] == '\0' || url[n] == '/');
}

int
console_begin(void **state)
{
	if ((*state = calloc(1, sizeof(struct creq))) == NULL)
		return -1;
	return 0;
}

void
console_end(void **state)
{
	struct creq	*q = *state;

	if (q == NULL)
		return;
	if (q->body.data != NULL)
		OPENSSL_cleanse(q->body.data, q->body.len);	/* a password */
	buf_free(&q->body);
	free(q);
	*state = NULL;
}

void
console_free(void)
{
	console_lua_free();
	session_free_all();
}

static void
client_addr(struct MHD_Connection *c, char *out, size_t len)
{
	const union MHD_ConnectionInfo	*ci;
	const struct sockaddr		*sa;

	snprintf(out, len, "?");
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci == NULL || (sa = ci->client_addr) == NULL)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)
		    sa)->sin_addr, out, (socklen_t)len);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)
		    (const void *)sa)->sin6_addr, out, (socklen_t)len);
}

/*
 * Queue an answer with the console's headers, plus the pairs in hdrs
 * (name, value, ..., NULL).
 */
static enum MHD_Result
answer(struct MHD_Connection *c, unsigned int status, const char *type,
    const char *body, size_t len, const char **hdrs)
{
	struct MHD_Response	*resp;
	enum MHD_Result		 ret;
	int			 i;

	resp = MHD_create_response_from_buffer(len, (void *)(uintptr_t)body,
	    MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(resp, "Content-Security-Policy",
	    "default-src 'self'; frame-ancestors 'none'; form-action 'self';"
	    " base-uri 'none'");
	MHD_add_response_header(resp, "X-Frame-Options", "DENY");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(resp, "Referrer-Policy", "same-origin");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
	    "no-store");
	for (i = 0; hdrs != NULL && hdrs[i] != NULL; i += 2)
		MHD_add_response_header(resp, hdrs[i], hdrs[i + 1]);
	ret = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result
json_error(struct MHD_Connection *c, unsigned int status, const char *msg)
{
	char	body[256];
	int	n;

	n = snprintf(body, sizeof(body), "{\"ok\":false,\"error\":\"%s\"}",
	    msg);
	return answer(c, status, "application/json", body, (size_t)n, NULL);
}

static enum MHD_Result
redirect(struct MHD_Connection *c, const char *base, const char *to,
    const char *cookie)
{
	char		 loc[512];
	const char	*h[5];
	int		 n = 0;

	snprintf(loc, sizeof(loc), "%s%s", base, to);
	h[n++] = MHD_HTTP_HEADER_LOCATION;
	h[n++] = loc;
	if (cookie != NULL) {
		h[n++] = MHD_HTTP_HEADER_SET_COOKIE;
		h[n++] = cookie;
	}
	h[n] = NULL;
	return answer(c, MHD_HTTP_SEE_OTHER, "text/plain", "", 0, h);
}

/* The cookie of session id (NULL: one that ends it), in out. */
static void
make_cookie(struct MHD_Connection *c, const struct config *cfg,
    const char *id, char *out, size_t len)
{
	const char	*proto;
	int		 secure;

	/* walua speaks plain HTTP: TLS is a proxy's, which says so */
	proto = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    "X-Forwarded-Proto");
	secure = proto != NULL && strcasecmp(proto, "https") == 0;
	snprintf(out, len, COOKIE "=%s; Path=%s; HttpOnly; SameSite=Strict%s%s",
	    id != NULL ? id : "", cfg->console_path, secure ? "; Secure" : "",
	    id != NULL ? "" : "; Max-Age=0");
}

static int
unhex(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/*
 * The form field name of an application/x-www-form-urlencoded body,
 * decoded into out (NUL-terminated, cut at outlen - 1).  Returns its
 * length, or -1 when the body has no such field.
 */
static long
form_field(const struct buf *b, const char *name, char *out, size_t outlen)
{
	const char	*p = b->data, *end = b->data + b->len, *amp, *eq;
	size_t		 nlen = strlen(name), n;
	int		 hi, lo;

	if (p == NULL || outlen == 0)
		return -1;
	for (; p < end; p = amp + 1) {
		if ((amp = memchr(p, '&', (size_t)(end - p))) == NULL)
			amp = end;
		eq = memchr(p, '=', (size_t)(amp - p));
		if (eq == NULL || (size_t)(eq - p) != nlen ||
		    memcmp(p, name, nlen) != 0)
			continue;
		for (n = 0, p = eq + 1; p < amp && n + 1 < outlen; p++) {
			if (*p == '+')
				out[n++] = ' ';
			else if (*p == '%' && p + 2 < amp &&
			    (hi = unhex(p[1])) >= 0 && (lo = unhex(p[2])) >= 0) {
				out[n++] = (char)(hi << 4 | lo);
				p += 2;
			} else
				out[n++] = *p;
		}
		out[n] = '\0';
		return (long)n;
	}
	return -1;
}

/* The user's password hash in cfg, for session_find. */
static const char *
hash_of(const void *arg, const char *user)
{
	const struct console_user *u = config_console_user(arg, user);

	return u != NULL ? u->password_hash : NULL;
}

/* Render a page (console.lua) and answer it. */
static enum MHD_Result
page(struct MHD_Connection *c, const struct config *cfg, const char *method,
    const char *path, const struct session_view *s, const struct buf *form,
    const char *message, unsigned int status, const char **hdrs)
{
	struct console_req	 rq;
	struct console_resp	 rs;
	enum MHD_Result		 ret;
	const char		*h[7];
	int			 i, n = 0;

	memset(&rq, 0, sizeof(rq));
	rq.cfg = cfg;
	rq.conn = c;
	rq.method = method;
	rq.path = path;
	rq.user = s != NULL ? s->user : NULL;
	rq.csrf = s != NULL ? s->csrf : NULL;
	rq.form = form != NULL ? form->data : NULL;
	rq.formlen = form != NULL ? form->len : 0;
	rq.message = message;
	if (console_lua(&rq, &rs) == -1)
		return strncmp(path, "/api/", 5) == 0 ? json_error(c,
		    MHD_HTTP_INTERNAL_SERVER_ERROR, "console error (logged)") :
		    answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain",
		    "console error (logged)\n", 23, NULL);
	if (rs.location[0] != '\0') {
		h[n++] = MHD_HTTP_HEADER_LOCATION;
		h[n++] = rs.location;
	}
	for (i = 0; hdrs != NULL && hdrs[i] != NULL && n < 5; i += 2) {
		h[n++] = hdrs[i];
		h[n++] = hdrs[i + 1];
	}
	h[n] = NULL;
	ret = answer(c, status != 0 ? status : (unsigned int)rs.status,
	    rs.type, rs.body.data != NULL ? rs.body.data : "", rs.body.len, h);
	buf_free(&rs.body);
	return ret;
}

/*
 * POST /login: the lockout first (a locked name or address gets 429
 * whatever the password), then the password, outside any lock.
 */
static enum MHD_Result
login(struct MHD_Connection *c, const struct config *cfg,
    const struct buf *form)
{
	const struct console_user *u;
	char		 user[65], pw[1024], addr[64], id[SESSION_ID_HEX + 1];
	char		 cookie[256], retry[16];
	const char	*h[3];
	long		 pwlen;
	int		 wait, ok;

	client_addr(c, addr, sizeof(addr));
	if (form_field(form, "user", user, sizeof(user)) < 0)
		user[0] = '\0';
	if ((pwlen = form_field(form, "password", pw, sizeof(pw))) < 0)
		pwlen = 0;
	if ((wait = lockout_wait(user, addr)) > 0) {
		OPENSSL_cleanse(pw, sizeof(pw));
		snprintf(retry, sizeof(retry), "%d", wait);
		log_kv(LOG_WARN, "console login refused", "user", user,
		    "remote", addr, "reason", "too many wrong passwords",
		    "#retry_after", retry, NULL);
		h[0] = MHD_HTTP_HEADER_RETRY_AFTER;
		h[1] = retry;
		h[2] = NULL;
		return page(c, cfg, "GET", "/login", NULL, NULL, "Too many "
		    "wrong passwords: wait a minute and try again.",
		    MHD_HTTP_TOO_MANY_REQUESTS, h);
	}
	/* an unknown name costs what a known one does */
	u = config_console_user(cfg, user);
	ok = passwd_verify(u != NULL ? u->password_hash :
	    cfg->console_users[0].password_hash, pw, (size_t)pwlen) == 1 &&
	    u != NULL;
	OPENSSL_cleanse(pw, sizeof(pw));
	if (!ok) {
		lockout_fail(user, addr);
		log_kv(LOG_WARN, "console login failed", "user", user,
		    "remote", addr, NULL);
		return page(c, cfg, "GET", "/login", NULL, NULL, "Wrong user "
		    "name or password.", MHD_HTTP_UNAUTHORIZED, NULL);
	}
	lockout_clear(user, addr);
	if (session_create(user, u->password_hash, id) == -1) {
		log_kv(LOG_ERROR, "console login: cannot make a session",
		    "user", user, NULL);
		return answer(c, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain",
		    "cannot make a session\n", 22, NULL);
	}
	log_kv(LOG_INFO, "console login", "user", user, "remote", addr, NULL);
	make_cookie(c, cfg, id, cookie, sizeof(cookie));
	OPENSSL_cleanse(id, sizeof(id));
	return redirect(c, cfg->console_path, "/", cookie);
}

/* Whether a POST carries the session's CSRF token (field or header). */
static int
csrf_ok(struct MHD_Connection *c, const struct session_view *s,
    const struct buf *form)
{
	const char	*h;
	char		 f[SESSION_ID_HEX + 2];

	h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-CSRF-Token");
	if (h == NULL) {
		if (form_field(form, "csrf", f, sizeof(f)) < 0)
			return 0;
		h = f;
	}
	return strlen(h) == SESSION_ID_HEX &&
	    CRYPTO_memcmp(h, s->csrf, SESSION_ID_HEX) == 0;
}

static enum MHD_Result
serve(struct MHD_Connection *c, const struct config *cfg, const char *url,
    const char *method, struct creq *q)
{
	const struct luasrc	*css;
	struct session_view	 s;
	const char		*path = url + strlen(cfg->console_path);
	const char		*sid;
	char			 cookie[256], addr[64];
	int			 get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
				    strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	int			 post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
	int			 api = strncmp(path, "/api/", 5) == 0 ||
				    strcmp(path, "/api") == 0;

	if (*path == '\0')
		path = "/";
	if (!get && !post) {
		const char *h[] = { MHD_HTTP_HEADER_ALLOW, "GET, HEAD, POST",
		    NULL };
		return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
		    "method not allowed\n", 19, h);
	}
	if (q->too_large)
		return answer(c, MHD_HTTP_CONTENT_TOO_LARGE, "text/plain",
		    "form too large\n", 15, NULL);
	/* what needs no session */
	if (strcmp(path, "/style.css") == 0 && get) {
		if ((css = luasrc_find(CSS_PATH)) == NULL)
			return MHD_NO;
		return answer(c, MHD_HTTP_OK, "text/css; charset=utf-8",
		    css->data, css->len, NULL);
	}
	if (strcmp(path, "/login") == 0) {
		if (post)
			return login(c, cfg, &q->body);
		return page(c, cfg, "GET", "/login", NULL, NULL, NULL, 0,
		    NULL);
	}
	sid = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, COOKIE);
	if (sid == NULL || !session_find(sid, hash_of, cfg, &s)) {
		if (api)
			return json_error(c, MHD_HTTP_UNAUTHORIZED,
			    "log in first: POST the login form for a session "
			    "cookie");
		return redirect(c, cfg->console_path, "/login", NULL);
	}
	if (post && !csrf_ok(c, &s, &q->body)) {
		client_addr(c, addr, sizeof(addr));
		log_kv(LOG_WARN, "console: POST without its CSRF token refused",
		    "user", s.user, "path", path, "remote", addr, NULL);
		return api ? json_error(c, MHD_HTTP_FORBIDDEN, "missing or "
		    "wrong CSRF token (X-CSRF-Token)") : answer(c,
		    MHD_HTTP_FORBIDDEN, "text/plain", "missing or wrong CSRF "
		    "token: reload the page\n", 42, NULL);
	}
	if (post && strcmp(path, "/logout") == 0) {
		session_drop(sid);
		log_kv(LOG_INFO, "console logout", "user", s.user, NULL);
		make_cookie(c, cfg, NULL, cookie, sizeof(cookie));
		return redirect(c, cfg->console_path, "/login", cookie);
	}
	return page(c, cfg, method, path, &s, post ? &q->body : NULL, NULL, 0,
	    NULL);
}

/*
 * A console request after its first call: gather a POST body (capped),
 * then answer on the last call.
 */
enum MHD_Result
console_request(struct MHD_Connection *c, const char *url,
    const char *method, const char *upload, size_t *upload_size,
    void **state)
{
	struct creq	*q = *state;
	struct config	*cfg;
	enum MHD_Result	 ret;

	if (q == NULL)
		return MHD_NO;
	if (*upload_size > 0) {
		if (!q->too_large && q->body.len + *upload_size <= MAX_FORM) {
			if (buf_append(&q->body, upload, *upload_size) == -1)
				return MHD_NO;
		} else
			q->too_large = 1;
		*upload_size = 0;
		return MHD_YES;
	}
	/* the configuration of now: a reload may have changed the users */
	if ((cfg = config_get()) == NULL)
		return MHD_NO;
	if (cfg->console_path == NULL || !console_serves(cfg, url,
	    cfg->admin_listen != NULL))
		ret = json_error(c, MHD_HTTP_NOT_FOUND, "no such path");
	else
		ret = serve(c, cfg, url, method, q);
	config_put(cfg);
	return ret;
}
