/*
 * fuzz_token.c - libFuzzer target for the OAuth2 token endpoint
 * (oauth_token in src/oauth.c: form and JSON bodies, Basic credentials)
 * and for oauth_check, the Bearer check of oauth2 endpoints.
 *
 * Input: byte 0 picks the Content-Type (low 3 bits) and whether an
 * Authorization header is sent (FL_AUTHZ); that header is the next line;
 * the rest is the body.  The configuration is fixed: two clients, written
 * to a scratch folder at start with the database beside it, so issued
 * tokens really go through SQLite.
 *
 * Besides sanitizer reports, every answer must be one the HTTP side can
 * send: a body, and a status among those oauth_token documents.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "event.h"
#include "mhd.h"
#include "fuzzlib.h"
#include "metrics.h"
#include "oauth.h"

#define FL_AUTHZ	0x08	/* an Authorization header: the next line */
#define FL_CHECK	0x10	/* also check that header as a Bearer token */

/* Secrets a seed can use: insider:s3cret is aW5zaWRlcjpzM2NyZXQ= */
static const char config_text[] =
	"return {\n"
	"	listen = \"127.0.0.1:0\",\n"
	"	database = \"fuzz.db\",\n"
	"	durability = \"off\",\n"
	"	oauth2 = {\n"
	"		clients = {\n"
	"			{ id = \"insider\", secret = \"s3cret\",\n"
	"			  refresh_token = \"r3fresh\",\n"
	"			  scopes = { \"read\", \"write\" } },\n"
	"			{ id = \"other\", secret = \"pa ss+%\" },\n"
	"		},\n"
	"	},\n"
	"	log_level = \"error\",\n"
	"}\n";

static const char *const ctypes[8] = {
	NULL,
	"application/x-www-form-urlencoded",
	"application/json",
	"application/json; charset=utf-8",
	"APPLICATION/X-WWW-FORM-URLENCODED; charset=UTF-8",
	"text/plain",
	"multipart/form-data; boundary=x",
	"",
};

static struct config	*cfg;

static void
fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_token: %s: %s\n", what, detail ? detail :
	    "(null)");
	abort();
}

/* What main does at shutdown, so LeakSanitizer's last check is clean. */
static void
done(void)
{
	oauth_shutdown();
	event_shutdown();	/* the JSON bodies' decoder */
	metrics_free();
	config_free(cfg);
	cfg = NULL;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char	*path, err[512];

	path = fuzz_path("walua.conf.lua");
	fuzz_write(path, config_text, sizeof(config_text) - 1);
	if ((cfg = config_load(path, err, sizeof(err))) == NULL)
		fail("cannot load the configuration", err);
	free(path);
	/* the token endpoint decodes forms with libmicrohttpd's unescape */
	if (mhd_load(err, sizeof(err)) == -1)
		fail("cannot load libmicrohttpd", err);
	/* after fuzz_path: atexit runs backwards, so this closes first */
	atexit(done);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct oauth_answer	 a;
	const char		*reason = NULL;
	char			*authz = NULL;
	int			 flags, rc;

	if (size < 1)
		return -1;
	flags = data[0];
	data++;
	size--;
	if (flags & FL_AUTHZ)
		authz = fuzz_line(&data, &size);

	oauth_token(cfg, authz, ctypes[flags & 7], (const char *)data, size,
	    &a);
	if (a.body.data == NULL)
		fail("answer without a body", a.reason);
	switch (a.status) {
	case 200:
		if (strncmp(a.body.data, "{\"access_token\":\"", 17) != 0)
			fail("a token answer without a token", a.body.data);
		break;
	case 400:
	case 401:
	case 429:
	case 500:
	case 503:
		if (strncmp(a.body.data, "{\"error\":\"", 10) != 0)
			fail("an error answer without an error", a.body.data);
		break;
	default:
		fail("unexpected status", a.body.data);
	}
	buf_free(&a.body);

	if (flags & FL_CHECK) {
		rc = oauth_check(cfg, authz, &reason);
		if (rc == -1)
			fail("oauth_check: the database failed", authz);
		if (rc == 0 && reason == NULL)
			fail("oauth_check refused without a reason", authz);
	}
	free(authz);
	return 0;
}
