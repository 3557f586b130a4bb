"""The outbound side, black-box: walua.http, walua.crypto, walua.insider and
walua.kapso (README, Handler scripts and the Lua API), and the admin scripts
insider-webhooks, insider-settings, kapso-webhooks and simulate (README,
Admin scripts), against Insider One's v1 and gateway APIs and Kapso's
management API.

The bindings and scripts run as `walua run -c CONF ...` against the strict
fakes of tests/fakes (FakeInsider, FakeKapso), which record every request;
the tests assert what the fake received (method, path, query, headers, body
and its casing) and what the script printed (secrets masked).  Lua scripts
that exercise the bindings directly are written into temporary folders and
print one JSON line with their results.  Handler-side behaviour (send from a
handler, a provider that never answers) runs in a real daemon.

Every subprocess has a timeout, every fake and daemon is stopped, and the
credential variables (README, Admin scripts) are removed from the
environment of each
`walua run`, so a developer's own settings cannot leak into a test.
"""
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import WALUA, Daemon, free_port, lua_str, text_body
from fake_insider import (FakeInsider, DEFAULT_AUTH_KEY, DEFAULT_CLIENT_ID,
                          DEFAULT_CLIENT_SECRET, DEFAULT_PHONE)
from fake_kapso import FakeKapso, DEFAULT_API_KEY

# walua's own OAuth2 client (the one Insider would use to call walua); the
# admin scripts default the webhook's oauth2 fields to it
OAUTH_CLIENT_ID = "insider"
OAUTH_CLIENT_SECRET = "walua-oauth-secret-7f3a9c1e5b"
OAUTH_REFRESH = "walua-refresh-4d8b2e6a0c"
OAUTH_SCOPES = ("webhook.write",)
OAUTH_TTL = 1800
ENDPOINT_TOKEN = "walua-endpoint-bearer-9a1b3c5d7e"
KAPSO_ENDPOINT_SECRET = "kapso-endpoint-secret-2468ace0"
PUBLIC = "https://bot.example.com"
TOKEN_URL = PUBLIC + "/oauth/token"

CRED_VARS = ("WALUA_INSIDER_API_URL", "WALUA_INSIDER_GATEWAY_URL",
             "WALUA_KAPSO_API_URL", "INSIDER_AUTH_KEY", "INSIDER_CLIENT_ID",
             "INSIDER_CLIENT_SECRET", "KAPSO_API_KEY")

GH_SECRET = "It's a Secret to Everybody"
GH_BODY = "Hello, World!"
GH_SIG = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
SHA256_EMPTY = ("e3b0c44298fc1c149afbf4c8996fb924"
                "27ae41e4649b934ca495991b7852b855")


# running walua ------------------------------------------------------------
def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in CRED_VARS}
    env.update(extra or {})
    return env


def wrun(*args, conf=None, cwd=None, env=None, timeout=20):
    """`walua run [-c conf] args...` with the credential variables unset."""
    argv = [WALUA, "run"] + (["-c", conf] if conf else []) + list(args)
    return subprocess.run(argv, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=clean_env(env))


def show(p):
    return "exit %d\nstdout: %s\nstderr: %s" % (p.returncode, p.stdout[-3000:],
                                                  p.stderr[-3000:])


def ok(p, what=""):
    assert p.returncode == 0, "%s: %s" % (what, show(p))
    return p


def failed(p, what=""):
    assert p.returncode == 1, "%s: expected exit 1, %s" % (what, show(p))
    return p


def out_json(p, what=""):
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise AssertionError("%s: stdout is not JSON: %s" % (what, show(p)))


def assert_not_printed(p, secrets, what=""):
    for s in secrets:
        assert s not in p.stdout and s not in p.stderr, (
            "%s: secret %r printed: %s" % (what, s, show(p)))


class Scratch:
    """A temporary folder for configs and Lua scripts."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="walua-outbound-")

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def path(self, name):
        return os.path.join(self.dir, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


def insider_conf(ins=None, creds=True, auth_key=True, api_url=None,
                 gateway_url=None):
    parts = []
    if auth_key:
        parts.append("auth_key = %s" % lua_str(DEFAULT_AUTH_KEY))
    if creds:
        parts.append("client_id = %s, client_secret = %s" % (
            lua_str(DEFAULT_CLIENT_ID), lua_str(DEFAULT_CLIENT_SECRET)))
    if ins is not None or api_url:
        parts.append("api_url = %s" % lua_str(api_url or ins.api_url))
    if ins is not None or gateway_url:
        parts.append("gateway_url = %s" % lua_str(gateway_url or
                                                  ins.gateway_url))
    return "insider = { %s }," % ", ".join(parts)


def kapso_conf(kap, api_key=DEFAULT_API_KEY):
    return "kapso = { api_key = %s, api_url = %s }," % (lua_str(api_key),
                                                       lua_str(kap.api_url))


def oauth_conf(clients=True):
    if not clients:
        return "oauth2 = { token_ttl = %d }," % OAUTH_TTL
    return ('oauth2 = { path = "/oauth/token", token_ttl = %d, clients = {\n'
            '  { id = %s, secret = %s, refresh_token = %s, scopes = { %s } } } },'
            % (OAUTH_TTL, lua_str(OAUTH_CLIENT_ID), lua_str(OAUTH_CLIENT_SECRET),
               lua_str(OAUTH_REFRESH),
               ", ".join(lua_str(s) for s in OAUTH_SCOPES)))


ADMIN_ENDPOINTS = (
    'endpoints = {\n'
    '  { path = "/webhooks/insider", provider = "insider",\n'
    '    auth = { type = "bearer", token = %s } },\n'
    '  { path = "/webhooks/kapso", provider = "kapso",\n'
    '    auth = { type = "kapso", secret = %s } } },'
    % (lua_str(ENDPOINT_TOKEN), lua_str(KAPSO_ENDPOINT_SECRET)))


def write_conf(s, *parts, name="walua.conf.lua"):
    return s.write(name, "return {\n%s\n}\n" % "\n".join(parts))


# Lua helpers shared by the binding scripts: E(r, err) turns a binding's
# result into a JSON-able record; out(t) prints it as the last line.
LUA_PRELUDE = r'''
local json = require "walua.json"
local function E(r, err)
	if r ~= nil then return { ok = true, value = r } end
	if type(err) ~= "table" then
		return { ok = false, bad = "err is not a table: " .. tostring(err) }
	end
	return { ok = false, status = err.status, code = err.code,
	    message = err.message, str = tostring(err),
	    has_tostring = not tostring(err):find("^table: ") }
end
local function out(t) print(json.encode(t)) end
'''


def run_lua(s, src, conf, *args, timeout=30, what="lua script", env=None):
    path = s.write("script_%d.lua" % int(time.time() * 1e6), LUA_PRELUDE + src)
    p = wrun(path, *args, conf=conf, timeout=timeout, env=env)
    assert p.returncode == 0, "%s: %s" % (what, show(p))
    return out_json(p, what)


def bearer_of(req):
    h = req["headers"].get("authorization", "")
    assert h.startswith("Bearer "), ("no bearer token", req["headers"])
    return h[len("Bearer "):]


def ct_json(req):
    ct = req["headers"].get("content-type", "")
    return ct.split(";")[0].strip().lower() == "application/json"


def no_snake(obj, where):
    """No key of a v2 webhook body (at any depth) is snake_case."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert "_" not in k, "%s: snake_case key %r in %r" % (where, k, obj)
            no_snake(v, where)
    elif isinstance(obj, list):
        for v in obj:
            no_snake(v, where)


def no_camel(obj, where):
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert k == k.lower(), "%s: camelCase key %r in %r" % (where, k,
                                                                   obj)
            no_camel(v, where)
    elif isinstance(obj, list):
        for v in obj:
            no_camel(v, where)


def ts_of(line):
    return datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


# insider-webhooks ----------------------------------------------------------
WH_PATH = "/api/wa/v2/webhooks"


def test_insider_webhooks_script():
    with Scratch() as s, FakeInsider(token_rate_limit=None) as ins:
        conf = write_conf(s, insider_conf(ins), oauth_conf())
        issued = lambda: set(ins.state["tokens"])
        printed = []

        def run(*a, **kw):
            p = wrun("insider-webhooks", *a, conf=conf, **kw)
            printed.append(p)
            return p

        # --help
        p = run("--help")
        ok(p, "--help")
        assert "usage" in p.stdout.lower() and "create" in p.stdout, show(p)

        # create, text output, oauth2 defaults from walua's oauth2.clients
        ins.clear()
        p = ok(run("create", "--phone", "+1 555 123 4567", "--url",
                   PUBLIC + "/webhooks/insider-oauth", "--token-url",
                   TOKEN_URL), "create")
        posts = ins.requests_to(WH_PATH, "POST")
        assert len(posts) == 1, ins.requests
        r = posts[0]
        assert r["status"] == 200, r
        assert r["query"] == {"phoneNumber": [DEFAULT_PHONE]}, r["query"]
        assert bearer_of(r) in issued(), "bearer is not a gateway token"
        assert ct_json(r), r["headers"]
        b = r["json"]
        no_snake(b, "create body")
        assert set(b) == {"authType", "subProduct", "webhookUrl", "events",
                          "oauth2"}, b
        assert b["authType"] == "oauth2" and b["subProduct"] == "conversational"
        assert b["webhookUrl"] == PUBLIC + "/webhooks/insider-oauth", b
        assert "reply" in b["events"], b["events"]
        assert b["oauth2"] == {
            "grantType": "client_credentials", "tokenUrl": TOKEN_URL,
            "clientId": OAUTH_CLIENT_ID, "clientSecret": OAUTH_CLIENT_SECRET,
            "scopes": list(OAUTH_SCOPES), "expiresIn": OAUTH_TTL}, b["oauth2"]
        tok = ins.requests_to("/auth/token", "POST")
        assert len(tok) == 1 and tok[0]["json"]["client_id"] == \
            DEFAULT_CLIENT_ID, tok
        (wid,) = [w["id"] for w in ins.webhooks(DEFAULT_PHONE)]
        assert "created webhook %d" % wid in p.stdout, show(p)

        # create --json, every oauth2 field from flags, transactional
        ins.clear()
        p = ok(run("create", "--phone", DEFAULT_PHONE, "--url",
                   PUBLIC + "/webhooks/tx", "--sub-product", "transactional",
                   "--events", "sent,read", "--token-url", TOKEN_URL,
                   "--client-id", "flag-client", "--client-secret",
                   "flag-client-secret-1234567890", "--grant-type",
                   "refresh_token", "--refresh-token", "flag-refresh-abcdef",
                   "--scopes", "a.read,b.write", "--expires-in", "900",
                   "--json"), "create --json")
        (r,) = ins.requests_to(WH_PATH, "POST")
        b = r["json"]
        no_snake(b, "create body")
        assert b["subProduct"] == "transactional" and \
            b["events"] == ["sent", "read"], b
        assert b["oauth2"] == {
            "grantType": "refresh_token", "tokenUrl": TOKEN_URL,
            "clientId": "flag-client",
            "clientSecret": "flag-client-secret-1234567890",
            "refreshToken": "flag-refresh-abcdef",
            "scopes": ["a.read", "b.write"], "expiresIn": 900}, b["oauth2"]
        wid2 = out_json(p, "create --json")["id"]
        assert wid2 != wid and wid2 in [w["id"] for w in ins.webhooks()], p

        # list, text: masked secrets only
        ins.clear()
        p = ok(run("list", "--phone", DEFAULT_PHONE), "list")
        (r,) = ins.requests_to(WH_PATH)
        assert (r["method"], r["path"], r["query"]) == (
            "GET", WH_PATH, {"phoneNumber": [DEFAULT_PHONE]}), r
        assert bearer_of(r) in issued()
        for w in (wid, wid2):
            assert str(w) in p.stdout, show(p)
        assert "walua-oauth-se********" in p.stdout, show(p)
        assert_not_printed(p, [OAUTH_CLIENT_SECRET,
                               "flag-client-secret-1234567890"], "list")

        # list --json: snake_case records, masked secret
        p = ok(run("list", "--phone", DEFAULT_PHONE, "--json"), "list --json")
        recs = out_json(p, "list --json")
        assert isinstance(recs, list) and len(recs) == 2, recs
        rec = [x for x in recs if x["id"] == wid][0]
        assert rec["webhook_url"] == PUBLIC + "/webhooks/insider-oauth", rec
        assert rec["sub_product"] == "conversational", rec
        assert rec["oauth2"]["client_id"] == OAUTH_CLIENT_ID, rec
        assert rec["oauth2"]["expires_in"] == OAUTH_TTL, rec
        assert rec["oauth2"]["client_secret"] == "walua-oauth-se********", rec
        assert_not_printed(p, [OAUTH_CLIENT_SECRET,
                               "flag-client-secret-1234567890",
                               "flag-refresh-abcdef"], "list --json")

        # update: the secret comes from walua's oauth2.clients, never the
        # masked value the list showed; unchanged fields come from the list
        ins.clear()
        p = ok(run("update", "--phone", DEFAULT_PHONE, "--id", str(wid),
                   "--events", "reply,read"), "update")
        puts = ins.requests_to("%s/%d" % (WH_PATH, wid), "PUT")
        assert len(puts) == 1, ins.requests
        r = puts[0]
        assert r["status"] == 200 and r["query"] == {
            "phoneNumber": [DEFAULT_PHONE]}, r
        assert bearer_of(r) in issued() and ct_json(r), r["headers"]
        b = r["json"]
        no_snake(b, "update body")
        assert "subProduct" not in b, b
        assert b["events"] == ["reply", "read"], b
        assert b["webhookUrl"] == PUBLIC + "/webhooks/insider-oauth", b
        assert b["oauth2"]["clientSecret"] == OAUTH_CLIENT_SECRET, b
        assert b["oauth2"]["tokenUrl"] == TOKEN_URL, b
        assert "updated webhook %d" % wid in p.stdout, show(p)
        stored = [w for w in ins.webhooks() if w["id"] == wid][0]
        assert stored["events"] == ["reply", "read"], stored
        assert stored["oauth2"]["clientSecret"] == OAUTH_CLIENT_SECRET

        # update --json, the secret from --client-secret
        ins.clear()
        p = ok(run("update", "--phone", DEFAULT_PHONE, "--id", str(wid2),
                   "--url", PUBLIC + "/webhooks/tx2", "--client-secret",
                   "rotated-secret-0987654321", "--refresh-token",
                   "flag-refresh-abcdef", "--json"), "update --json")
        (r,) = ins.requests_to("%s/%d" % (WH_PATH, wid2), "PUT")
        b = r["json"]
        assert "subProduct" not in b and \
            b["webhookUrl"] == PUBLIC + "/webhooks/tx2", b
        assert b["oauth2"]["clientSecret"] == "rotated-secret-0987654321", b
        assert b["oauth2"]["clientId"] == "flag-client", b
        assert "****" not in json.dumps(b), b
        assert out_json(p, "update --json")["id"] in (wid2, str(wid2)), p

        # update with no secret anywhere (no flag, no oauth2.clients): an
        # error, and the masked secret is not sent back
        conf_noclient = write_conf(s, insider_conf(ins), oauth_conf(False),
                                   name="noclient.conf.lua")
        ins.clear()
        p = wrun("insider-webhooks", "update", "--phone", DEFAULT_PHONE,
                 "--id", str(wid), "--events", "reply", conf=conf_noclient)
        printed.append(p)
        assert p.returncode != 0, show(p)
        assert "client_secret" in p.stderr, show(p)
        assert ins.requests_to("%s/%d" % (WH_PATH, wid), "PUT") == [], \
            ins.requests

        # --sub-product on update is refused before any request
        ins.clear()
        p = run("update", "--phone", DEFAULT_PHONE, "--id", str(wid),
                "--sub-product", "transactional")
        assert p.returncode != 0 and "sub-product" in p.stderr, show(p)
        assert ins.requests_to(method="PUT") == [], ins.requests

        # delete, text and --json
        ins.clear()
        p = ok(run("delete", "--phone", DEFAULT_PHONE, "--id", str(wid)),
               "delete")
        (r,) = ins.requests_to("%s/%d" % (WH_PATH, wid), "DELETE")
        assert r["status"] == 200 and r["query"] == {
            "phoneNumber": [DEFAULT_PHONE]}, r
        assert bearer_of(r) in issued()
        assert "deleted webhook %d" % wid in p.stdout, show(p)
        p = ok(run("delete", "--phone", DEFAULT_PHONE, "--id", str(wid2),
                   "--json"), "delete --json")
        assert str(out_json(p)["deleted"]) == str(wid2), show(p)
        assert ins.webhooks(DEFAULT_PHONE) == [], ins.webhooks()

        # provider failures: exit 1, the provider's message on stderr
        p = failed(run("list", "--phone", "19998887777"), "unknown phone")
        assert "Provider not found for the given phone number" in p.stderr, \
            show(p)
        ok(run("create", "--phone", DEFAULT_PHONE, "--url", PUBLIC + "/dup",
               "--token-url", TOKEN_URL), "create")
        p = failed(run("create", "--phone", DEFAULT_PHONE, "--url",
                       PUBLIC + "/dup", "--token-url", TOKEN_URL),
                   "duplicate create")
        assert "already exists" in p.stderr, show(p)
        p = failed(run("delete", "--phone", DEFAULT_PHONE, "--id", "4242",
                       "--json"), "delete unknown")
        assert "Webhook not found" in p.stderr, show(p)

        for p in printed:
            assert_not_printed(p, [OAUTH_CLIENT_SECRET, DEFAULT_CLIENT_SECRET,
                                   "flag-client-secret-1234567890",
                                   "rotated-secret-0987654321"],
                               "insider-webhooks")
        # the fake refuses masked secrets: none was ever sent
        for r in ins.requests:
            assert b"********" not in r["body"], r


# insider-settings ----------------------------------------------------------
V1_SETTINGS = "/v1/conversational/settings/update"
V2_SETTINGS = "/api/wa/v2/conversational/settings"


def test_insider_settings_script():
    with Scratch() as s, FakeInsider(token_rate_limit=None) as ins:
        conf = write_conf(s, insider_conf(ins), oauth_conf(), ADMIN_ENDPOINTS)
        printed = []

        def run(*a, **kw):
            p = wrun("insider-settings", *a, conf=conf, **kw)
            printed.append(p)
            return p

        p = ok(run("--help"), "--help")
        assert "v1" in p.stdout and "v2" in p.stdout, show(p)

        # v1, text
        p = ok(run("v1", "--url", PUBLIC + "/webhooks/insider", "--api-key",
                   "v1-bearer-key-abcdef012345"), "v1")
        (r,) = ins.requests
        assert (r["method"], r["path"], r["status"]) == (
            "POST", V1_SETTINGS, 200), r
        assert r["headers"].get("x-ins-auth-key") == DEFAULT_AUTH_KEY, r
        assert "authorization" not in r["headers"], r["headers"]
        assert ct_json(r), r["headers"]
        assert r["json"] == {"isActive": True,
                             "webhookUrl": PUBLIC + "/webhooks/insider",
                             "apiKey": "v1-bearer-key-abcdef012345"}, r["json"]
        assert "Settings updated successfully" in p.stdout, show(p)
        assert_not_printed(p, ["v1-bearer-key-abcdef012345"], "v1")

        # v1 --json --inactive, api key = the bearer token of walua's
        # endpoint at that path
        ins.clear()
        p = ok(run("v1", "--url", PUBLIC + "/webhooks/insider", "--inactive",
                   "--json"), "v1 --json")
        (r,) = ins.requests
        assert r["json"] == {"isActive": False,
                             "webhookUrl": PUBLIC + "/webhooks/insider",
                             "apiKey": ENDPOINT_TOKEN}, r["json"]
        j = out_json(p, "v1 --json")
        assert j.get("ok") is True, j
        assert_not_printed(p, [ENDPOINT_TOKEN], "v1 --json")

        # v2, bearer
        ins.clear()
        p = ok(run("v2", "--url", PUBLIC + "/webhooks/insider", "--from",
                   "+15551234567", "--auth-type", "bearer", "--api-key",
                   "v2-bearer-key-0123456789ab"), "v2 bearer")
        (r,) = ins.requests_to(V2_SETTINGS, "POST")
        assert r["status"] == 200 and ct_json(r), r
        assert bearer_of(r) in ins.state["tokens"], r["headers"]
        assert "x-ins-auth-key" not in r["headers"], r["headers"]
        assert r["json"] == {"webhook_url": PUBLIC + "/webhooks/insider",
                             "from": "+15551234567", "auth_type": "bearer",
                             "api_key": "v2-bearer-key-0123456789ab"}, r["json"]
        assert "Settings updated successfully" in p.stdout, show(p)
        assert_not_printed(p, ["v2-bearer-key-0123456789ab"], "v2 bearer")

        # v2 bearer --json, api key from the endpoint
        ins.clear()
        p = ok(run("v2", "--url", PUBLIC + "/webhooks/insider", "--auth-type",
                   "bearer", "--json"), "v2 bearer --json")
        (r,) = ins.requests_to(V2_SETTINGS, "POST")
        assert r["json"]["api_key"] == ENDPOINT_TOKEN, r["json"]
        assert out_json(p)["ok"] is True
        assert_not_printed(p, [ENDPOINT_TOKEN], "v2 bearer --json")

        # v2, oauth2 client_credentials, from walua's oauth2.clients
        ins.clear()
        p = ok(run("v2", "--url", PUBLIC + "/webhooks/insider-oauth",
                   "--auth-type", "oauth2", "--token-url", TOKEN_URL),
               "v2 oauth2")
        (r,) = ins.requests_to(V2_SETTINGS, "POST")
        no_camel(r["json"], "v2 settings body")
        assert r["json"] == {
            "webhook_url": PUBLIC + "/webhooks/insider-oauth",
            "auth_type": "oauth2",
            "oauth2": {"grant_type": "client_credentials",
                       "token_url": TOKEN_URL, "client_id": OAUTH_CLIENT_ID,
                       "client_secret": OAUTH_CLIENT_SECRET,
                       "scopes": list(OAUTH_SCOPES),
                       "expires_in": OAUTH_TTL}}, r["json"]
        assert_not_printed(p, [OAUTH_CLIENT_SECRET], "v2 oauth2")

        # v2 oauth2 refresh_token from flags, --json: secrets masked
        ins.clear()
        p = ok(run("v2", "--url", PUBLIC + "/webhooks/insider-oauth",
                   "--auth-type", "oauth2", "--token-url", TOKEN_URL,
                   "--grant-type", "refresh_token", "--refresh-token",
                   "flag-refresh-token-13579", "--client-id", "cid-2",
                   "--client-secret", "flag-secret-24680-abcdef", "--scopes",
                   "x.read,y.write", "--expires-in", "600", "--json"),
               "v2 oauth2 --json")
        (r,) = ins.requests_to(V2_SETTINGS, "POST")
        assert r["json"]["oauth2"] == {
            "grant_type": "refresh_token", "token_url": TOKEN_URL,
            "client_id": "cid-2", "client_secret": "flag-secret-24680-abcdef",
            "refresh_token": "flag-refresh-token-13579",
            "scopes": ["x.read", "y.write"], "expires_in": 600}, r["json"]
        j = out_json(p, "v2 oauth2 --json")
        assert j["ok"] is True, j
        assert_not_printed(p, ["flag-secret-24680-abcdef",
                               "flag-refresh-token-13579"], "v2 oauth2 --json")
        last = ins.settings("conversational")
        assert last["oauth2"]["client_secret"] == "flag-secret-24680-abcdef"

        # environment overrides the config: a config pointing nowhere, the
        # URL and key from WALUA_INSIDER_API_URL / INSIDER_AUTH_KEY
        dead = "http://127.0.0.1:%d" % free_port()
        conf_dead = write_conf(s, 'insider = { auth_key = "wrong-key", '
                               'api_url = %s },' % lua_str(dead),
                               name="dead.conf.lua")
        ins.clear()
        p = wrun("insider-settings", "v1", "--url", PUBLIC + "/x",
                 "--api-key", "env-case-key-000111", conf=conf_dead,
                 env={"WALUA_INSIDER_API_URL": ins.api_url,
                      "INSIDER_AUTH_KEY": DEFAULT_AUTH_KEY})
        ok(p, "v1 with env overrides")
        (r,) = ins.requests
        assert r["headers"]["x-ins-auth-key"] == DEFAULT_AUTH_KEY, r

        # provider failures: exit 1 with the provider's message on stderr
        ins.fail_next(400, {"message": "failed to validate the webhook",
                            "errorCode": "2020"}, path=V1_SETTINGS)
        p = failed(run("v1", "--url", PUBLIC + "/webhooks/insider",
                       "--api-key", "k-0123456789"), "v1 2020")
        assert "failed to validate the webhook" in p.stderr, show(p)
        assert "2020" in p.stderr, show(p)
        ins.fail_next(400, {"message": "failed to validate request",
                            "errorCode": "2011"}, path=V2_SETTINGS)
        p = failed(run("v2", "--url", PUBLIC + "/webhooks/insider",
                       "--auth-type", "bearer", "--api-key", "k-0123456789",
                       "--json"), "v2 2011")
        assert "failed to validate request" in p.stderr and \
            "2011" in p.stderr, show(p)
        # refused by the binding: nothing reaches the fake
        ins.clear()
        p = wrun("insider-settings", "v2", "--url", PUBLIC + "/nowhere",
                 "--auth-type", "bearer", conf=conf)
        printed.append(p)
        assert p.returncode != 0 and "api_key" in p.stderr, show(p)
        assert ins.requests == [], ins.requests
        # wrong auth key: Insider's 401 {"message": "unauthorized"}
        p = wrun("insider-settings", "v1", "--url", PUBLIC + "/x",
                 "--api-key", "k-0123456789", conf=conf,
                 env={"INSIDER_AUTH_KEY": "INS.wrong.key"})
        failed(p, "v1 wrong key")
        assert "unauthorized" in p.stderr, show(p)

        for p in printed:
            assert_not_printed(p, [OAUTH_CLIENT_SECRET, ENDPOINT_TOKEN,
                                   DEFAULT_CLIENT_SECRET, DEFAULT_AUTH_KEY],
                               "insider-settings")


# kapso-webhooks ------------------------------------------------------------
def test_kapso_webhooks_script():
    with Scratch() as s, FakeKapso() as kap:
        conf = write_conf(s, kapso_conf(kap), ADMIN_ENDPOINTS)
        cfg = kap.config_id
        base = "/api/v1/whatsapp_configs/%s/whatsapp_webhooks" % cfg
        printed = []

        def run(*a, **kw):
            p = wrun("kapso-webhooks", *a, conf=conf, **kw)
            printed.append(p)
            return p

        def api_key_ok(r):
            assert r["headers"].get("x-api-key") == DEFAULT_API_KEY, r

        p = ok(run("--help"), "--help")
        assert "usage" in p.stdout.lower() and "--config-id" in p.stdout

        # create, text
        p = ok(run("create", "--config-id", cfg, "--url",
                   PUBLIC + "/webhooks/kapso-a", "--secret-key",
                   "kapso-flag-secret-abcdef123", "--events",
                   "whatsapp.message.received,whatsapp.message.failed"),
               "create")
        (r,) = kap.requests
        assert (r["method"], r["path"], r["status"]) == ("POST", base, 201), r
        api_key_ok(r)
        assert ct_json(r), r["headers"]
        assert r["json"] == {"whatsapp_webhook": {
            "url": PUBLIC + "/webhooks/kapso-a",
            "secret_key": "kapso-flag-secret-abcdef123",
            "events": ["whatsapp.message.received",
                       "whatsapp.message.failed"],
            "active": True}}, r["json"]
        (w1,) = kap.webhooks(cfg)
        assert "created webhook " + w1["id"] in p.stdout, show(p)

        # create --json --inactive, the secret from walua's kapso endpoint
        kap.clear()
        p = ok(run("create", "--config-id", cfg, "--url",
                   PUBLIC + "/webhooks/kapso", "--inactive", "--json"),
               "create --json")
        (r,) = kap.requests
        assert r["json"] == {"whatsapp_webhook": {
            "url": PUBLIC + "/webhooks/kapso",
            "secret_key": KAPSO_ENDPOINT_SECRET, "active": False}}, r["json"]
        j = out_json(p, "create --json")
        w2 = j["id"]
        assert j["url"] == PUBLIC + "/webhooks/kapso", j
        assert j["secret_key"] != KAPSO_ENDPOINT_SECRET and \
            "*" in j["secret_key"], j

        # list, text and --json (masked)
        kap.clear()
        p = ok(run("list", "--config-id", cfg), "list")
        (r,) = kap.requests
        assert (r["method"], r["path"]) == ("GET", base), r
        api_key_ok(r)
        assert r["query"].get("page") == ["1"], r["query"]
        assert w1["id"] in p.stdout and w2 in p.stdout, show(p)
        p = ok(run("list", "--config-id", cfg, "--json"), "list --json")
        lst = out_json(p, "list --json")
        assert sorted(x["id"] for x in lst) == sorted([w1["id"], w2]), lst
        for x in lst:
            assert "*" in x["secret_key"], x
        kap.clear()
        p = ok(run("list", "--config-id", cfg, "--url-cont", "kapso-a",
                   "--active", "true", "--json"), "list filtered")
        (r,) = kap.requests
        assert r["query"].get("q[url_cont]") == ["kapso-a"] and \
            r["query"].get("q[active_eq]") == ["true"], r["query"]
        assert [x["id"] for x in out_json(p)] == [w1["id"]], p.stdout

        # get, text and --json
        kap.clear()
        p = ok(run("get", "--config-id", cfg, "--id", w1["id"]), "get")
        (r,) = kap.requests
        assert (r["method"], r["path"]) == ("GET", base + "/" + w1["id"]), r
        api_key_ok(r)
        assert w1["id"] in p.stdout and PUBLIC + "/webhooks/kapso-a" in \
            p.stdout, show(p)
        j = out_json(ok(run("get", "--config-id", cfg, "--id", w1["id"],
                            "--json"), "get --json"))
        assert j["id"] == w1["id"] and "*" in j["secret_key"], j

        # update: PATCH with only the changed keys
        kap.clear()
        p = ok(run("update", "--config-id", cfg, "--id", w1["id"],
                   "--active", "false"), "update")
        (r,) = kap.requests
        assert (r["method"], r["path"], r["status"]) == (
            "PATCH", base + "/" + w1["id"], 200), r
        api_key_ok(r)
        assert ct_json(r), r["headers"]
        assert r["json"] == {"whatsapp_webhook": {"active": False}}, r["json"]
        assert "updated webhook " + w1["id"] in p.stdout, show(p)
        kap.clear()
        p = ok(run("update", "--config-id", cfg, "--id", w1["id"], "--url",
                   PUBLIC + "/webhooks/kapso-b", "--secret-key",
                   "kapso-rotated-secret-998877", "--json"), "update --json")
        (r,) = kap.requests
        assert r["json"] == {"whatsapp_webhook": {
            "url": PUBLIC + "/webhooks/kapso-b",
            "secret_key": "kapso-rotated-secret-998877"}}, r["json"]
        j = out_json(p, "update --json")
        assert j["url"] == PUBLIC + "/webhooks/kapso-b" and \
            j["active"] is False and "*" in j["secret_key"], j

        # delete, text and --json
        kap.clear()
        p = ok(run("delete", "--config-id", cfg, "--id", w1["id"]), "delete")
        (r,) = kap.requests
        assert (r["method"], r["path"]) == ("DELETE", base + "/" + w1["id"])
        api_key_ok(r)
        assert "deleted webhook " + w1["id"] in p.stdout, show(p)
        p = ok(run("delete", "--config-id", cfg, "--id", w2, "--json"),
               "delete --json")
        assert out_json(p)["deleted"] == w2, show(p)
        assert kap.webhooks(cfg) == []

        # provider failures
        p = failed(run("get", "--config-id", cfg, "--id", "nope"), "get 404")
        assert "Resource not found" in p.stderr or \
            "could not be found" in p.stderr, show(p)
        p = wrun("kapso-webhooks", "list", "--config-id", cfg, conf=conf,
                 env={"KAPSO_API_KEY": "wrong-kapso-key"})
        failed(p, "wrong api key")
        assert "Unauthorized" in p.stderr, show(p)
        p = failed(run("update", "--config-id", cfg, "--id", "nope",
                       "--active", "true", "--json"), "update 404")
        assert "not found" in p.stderr.lower(), show(p)

        for p in printed:
            assert_not_printed(p, ["kapso-flag-secret-abcdef123",
                                   KAPSO_ENDPOINT_SECRET,
                                   "kapso-rotated-secret-998877",
                                   DEFAULT_API_KEY], "kapso-webhooks")

        # an empty list is a JSON array (kept last: the rest runs first)
        p = ok(run("list", "--config-id", cfg, "--json"), "empty list --json")
        assert out_json(p, "empty list --json") == [], (
            "an empty list printed as", p.stdout)


# gateway token -------------------------------------------------------------
TOKEN_SCRIPT = r'''
local insider = require "walua.insider"
local P, PHASE1, GO1, PHASE2, GO2 = ...
local function touch(p) local f = assert(io.open(p, "w")) f:close() end
local function wait(p)
	for _ = 1, 750 do
		local f = io.open(p)
		if f then f:close() return true end
		os.execute("sleep 0.02")
	end
	error("timed out waiting for " .. p)
end
local spec = { sub_product = "conversational",
    webhook_url = "https://bot.example.com/webhooks/a",
    events = { "reply", "read" }, auth_type = "oauth2",
    oauth2 = { grant_type = "client_credentials",
	token_url = "https://bot.example.com/oauth/token",
	client_id = "insider", client_secret = "walua-oauth-secret-7f3a9c1e5b",
	scopes = { "webhook.write" }, expires_in = 3600 } }
local r = {}
r.list1 = E(insider.webhooks.list(P))
local id, err = insider.webhooks.create(P, spec)
r.create = E(id, err)
spec.sub_product = nil
spec.events = { "reply", "sent" }
r.update = E(insider.webhooks.update(P, id, spec))
r.list2 = E(insider.webhooks.list(P))
r.delete = E(insider.webhooks.delete(P, id))
touch(PHASE1) wait(GO1)
r.after_revoke = E(insider.webhooks.list(P))
touch(PHASE2) wait(GO2)
r.double_401 = E(insider.webhooks.list(P))
out(r)
'''


def wait_file(path, proc, timeout=10):
    end = time.time() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError("script exited early: %d\n%s\n%s" % (
                proc.returncode, proc.stdout.read(), proc.stderr.read()))
        if time.time() > end:
            raise AssertionError("script did not reach " + path)
        time.sleep(0.02)


def test_gateway_token_cached_renewed_once_and_bounded():
    with Scratch() as s, FakeInsider() as ins:
        conf = write_conf(s, insider_conf(ins))
        script = s.write("tokens.lua", LUA_PRELUDE + TOKEN_SCRIPT)
        ph1, go1, ph2, go2 = (s.path(n) for n in ("ph1", "go1", "ph2", "go2"))
        proc = subprocess.Popen([WALUA, "run", "-c", conf, script,
                                 DEFAULT_PHONE, ph1, go1, ph2, go2],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=clean_env())
        try:
            # list, create, update, list, delete: one token for them all
            wait_file(ph1, proc)
            assert ins.token_requests == 1, ins.token_requests
            wh = [r for r in ins.requests if r["path"].startswith(WH_PATH)]
            assert [r["method"] for r in wh] == [
                "GET", "POST", "PUT", "GET", "DELETE"], wh
            assert all(r["status"] == 200 for r in wh), wh
            assert len({bearer_of(r) for r in wh}) == 1, "token not reused"
            (tok,) = ins.issued_tokens()
            assert set(ins.requests_to("/auth/token")[0]["json"]["scopes"]) \
                == {"wa-webhook-read", "wa-webhook-manage",
                    "wa-webhook-update", "wa-webhook-delete"}
            # a revoked token: 401, renewed once, the call succeeds
            ins.revoke_tokens()
            ins.clear()
            open(go1, "w").close()
            wait_file(ph2, proc)
            assert ins.token_requests == 2, ins.token_requests
            assert [(r["method"], r["path"], r["status"])
                    for r in ins.requests] == [
                ("GET", WH_PATH, 401), ("POST", "/auth/token", 200),
                ("GET", WH_PATH, 200)], ins.requests
            assert bearer_of(ins.requests[0]) == tok
            assert bearer_of(ins.requests[2]) != tok
            # a 401 again after the renewal: an error, not a loop
            ins.clear()
            ins.fail_next(401, {"message": "unauthorized"}, n=2, path=WH_PATH)
            open(go2, "w").close()
            stdout, stderr = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, (proc.returncode, stdout, stderr)
        r = json.loads(stdout.strip().splitlines()[-1])
        for k in ("list1", "create", "update", "list2", "delete",
                  "after_revoke"):
            assert r[k]["ok"], (k, r[k])
        assert r["list1"]["value"] == [] or r["list1"]["value"] == {}, r
        assert isinstance(r["create"]["value"], int), r["create"]
        assert r["list2"]["value"][0]["events"] == ["reply", "sent"], r
        e = r["double_401"]
        assert e["ok"] is False and e["status"] == 401, e
        assert "unauthorized" in e["message"], e
        assert "401" in e["str"], e
        # bounded: one renewal, then the error
        assert [(q["method"], q["path"], q["status"])
                for q in ins.requests] == [
            ("GET", WH_PATH, 401), ("POST", "/auth/token", 200),
            ("GET", WH_PATH, 401)], ins.requests
        assert ins.token_requests == 3


# validation ----------------------------------------------------------------
VALIDATION_SCRIPT = r'''
local insider = require "walua.insider"
local kapso = require "walua.kapso"
local P = "15551234567"
local function o2(over)
	local o = { grant_type = "client_credentials",
	    token_url = "https://bot.example.com/oauth/token",
	    client_id = "partner-whatsapp-client",
	    client_secret = "partner-whatsapp-secret",
	    scopes = { "whatsapp.read" }, expires_in = 3600 }
	for k, v in pairs(over or {}) do o[k] = v end
	return o
end
local function spec(over)
	local s = { sub_product = "transactional",
	    webhook_url = "https://bot.example.com/h", events = { "sent" },
	    auth_type = "oauth2", oauth2 = o2() }
	for k, v in pairs(over or {}) do s[k] = v end
	return s
end
local function upd(over)
	local s = spec(over)
	s.sub_product = over and over.sub_product or nil
	return s
end
local C = {}
C.conversational_no_reply = E(insider.webhooks.create(P, spec{
    sub_product = "conversational", events = { "sent", "read" } }))
C.bearer_on_v2 = E(insider.webhooks.create(P, spec{ auth_type = "bearer" }))
C.refresh_without_token = E(insider.webhooks.create(P, spec{
    oauth2 = o2{ grant_type = "refresh_token" } }))
C.expires_in_zero = E(insider.webhooks.create(P, spec{
    oauth2 = o2{ expires_in = 0 } }))
C.masked_secret = E(insider.webhooks.create(P, spec{
    oauth2 = o2{ client_secret = "partner-whatsa********" } }))
C.masked_secret_update = E(insider.webhooks.update(P, 84, upd{
    oauth2 = o2{ client_secret = "partner-whatsa********" } }))
C.sub_product_on_update = E(insider.webhooks.update(P, 84, upd{
    sub_product = "conversational" }))
C.missing_phone = E(insider.webhooks.create(nil, spec()))
C.missing_phone_list = E(insider.webhooks.list(nil))
C.unknown_field = E(insider.webhooks.create(P, spec{ bogus_field = 1 }))
C.unknown_oauth2_field = E(insider.webhooks.create(P, spec{
    oauth2 = o2{ bogus_field = 1 } }))
C.settings_bearer_no_api_key = E(insider.settings{
    webhook_url = "https://bot.example.com/h", auth_type = "bearer" })
C.settings_unknown_field = E(insider.settings{
    webhook_url = "https://bot.example.com/h", auth_type = "bearer",
    api_key = "k", bogus_field = true })
C.settings_v1_unknown_field = E(insider.settings_v1{ is_active = true,
    webhook_url = "https://bot.example.com/h", api_key = "k",
    bogus_field = 1 })
C.kapso_create_no_url = E(kapso.webhooks.create("cfg-1",
    { secret_key = "s3cret" }))
C.kapso_unknown_field = E(kapso.webhooks.create("cfg-1",
    { url = "https://bot.example.com/k", bogus_field = 1 }))
C.send_no_to = E(insider.send{ text = "hi" })
-- bad argument types raise
C.raises = { settings_v1 = not pcall(insider.settings_v1, "x"),
    send = not pcall(insider.send, 42) }
out(C)
'''

VALIDATION_FIELDS = {
    "conversational_no_reply": "reply",
    "bearer_on_v2": "auth_type",
    "refresh_without_token": "refresh_token",
    "expires_in_zero": "expires_in",
    "masked_secret": "client_secret",
    "masked_secret_update": "client_secret",
    "sub_product_on_update": "sub_product",
    "missing_phone": "phone",
    "missing_phone_list": "phone",
    "unknown_field": "bogus_field",
    "unknown_oauth2_field": "bogus_field",
    "settings_bearer_no_api_key": "api_key",
    "settings_unknown_field": "bogus_field",
    "settings_v1_unknown_field": "bogus_field",
    "kapso_create_no_url": "url",
    "kapso_unknown_field": "bogus_field",
    "send_no_to": "to",
}


def test_validation_fails_before_any_request():
    with Scratch() as s, FakeInsider() as ins, FakeKapso() as kap:
        conf = write_conf(s, insider_conf(ins), kapso_conf(kap))
        r = run_lua(s, VALIDATION_SCRIPT, conf, what="validation")
        problems = []
        for case, field in VALIDATION_FIELDS.items():
            e = r.get(case)
            if e is None or e.get("ok") is not False:
                problems.append("%s: not refused: %r" % (case, e))
            elif field not in (e.get("message") or ""):
                problems.append("%s: message does not name %r: %r" % (
                    case, field, e.get("message")))
            elif e.get("status") is not None:
                problems.append("%s: a validation error has status %r" % (
                    case, e["status"]))
            elif not e.get("has_tostring") or e["message"] not in e["str"]:
                problems.append("%s: tostring(err) = %r" % (case, e.get("str")))
        assert r["raises"] == {"settings_v1": True, "send": True}, r["raises"]
        assert ins.requests == [] and kap.requests == [], (
            [(q["method"], q["path"]) for q in ins.requests + kap.requests])
        assert ins.token_requests == 0
        assert not problems, "\n".join(problems)


# provider errors -----------------------------------------------------------
PROVIDER_ERRORS_SCRIPT = r'''
local insider = require "walua.insider"
local kapso = require "walua.kapso"
local cfg = ...
local P = "15551234567"
local R = {}
R.v1_2020 = E(insider.settings_v1{ is_active = true,
    webhook_url = "https://bot.example.com/h", api_key = "key-0123456789" })
R.v2_2011 = E(insider.settings{ webhook_url = "https://bot.example.com/h",
    auth_type = "bearer", api_key = "key-0123456789" })
R.v2_int_code = E(insider.settings{ webhook_url = "https://bot.example.com/h",
    auth_type = "bearer", api_key = "key-0123456789" })
R.send_2003 = E(insider.send{ from = "+19998887777", to = "+905321234567",
    text = "hi", api = "v2" })
R.unknown_phone = E(insider.webhooks.list("19998887777"))
R.kapso_404 = E(kapso.webhooks.get(cfg, "no-such-webhook"))
R.kapso_422 = E(kapso.webhooks.create(cfg, { url = "https://bot.example.com/k",
    events = { "bogus.event" } }))
out(R)
'''


def test_provider_errors_are_nil_err():
    with Scratch() as s, FakeInsider() as ins, \
            FakeKapso(allowed_events={"whatsapp.message.received"}) as kap:
        conf = write_conf(s, insider_conf(ins), kapso_conf(kap))
        ins.fail_next(400, {"message": "failed to validate the webhook",
                            "errorCode": "2020"}, path=V1_SETTINGS)
        ins.fail_next(400, {"message": "failed to validate request",
                            "errorCode": "2011"}, path=V2_SETTINGS)
        ins.fail_next(400, {"message": "error while saving",
                            "errorCode": 2012}, path=V2_SETTINGS)
        r = run_lua(s, PROVIDER_ERRORS_SCRIPT, conf, kap.config_id,
                    what="provider errors")

        def check(case, status, code, message):
            e = r[case]
            assert e["ok"] is False, (case, e)
            assert e["status"] == status, (case, e)
            if code is None:
                assert e.get("code") is None, (case, e)
            else:
                assert str(e.get("code")) == code, (case, e)
            assert message in e["message"], (case, e)
            assert e["has_tostring"], (case, e)
            for part in [message, str(status)] + ([code] if code else []):
                assert part in e["str"], (case, "tostring(err)", e["str"])

        check("v1_2020", 400, "2020", "failed to validate the webhook")
        check("v2_2011", 400, "2011", "failed to validate request")
        check("v2_int_code", 400, "2012", "error while saving")
        check("send_2003", 400, "2003", "Message could not be sent.")
        check("unknown_phone", 404, None,
              "Provider not found for the given phone number")
        check("kapso_404", 404, None, "Resource not found")
        check("kapso_422", 422, None, "bogus.event")
        # each failed once: no retry of a 4xx
        assert len(ins.requests_to(V1_SETTINGS)) == 1
        assert len(ins.requests_to(V2_SETTINGS)) == 2
        assert len(ins.requests_to(WH_PATH)) == 1
        assert len(kap.requests) == 2

        # the gateway refuses walua's client: the token call's 401, once
        ins.clear()
        ins.token_requests = 0
        r = run_lua(s, 'out({ list = E(require("walua.insider").webhooks'
                    '.list("15551234567")) })', conf, what="bad client",
                    env={"INSIDER_CLIENT_SECRET": "not-the-client-secret"})
        e = r["list"]
        assert e["ok"] is False and e["status"] == 401 and \
            "unauthorized" in e["message"], e
        assert [(q["method"], q["path"]) for q in ins.requests] == [
            ("POST", "/auth/token")], ins.requests


# 429 -----------------------------------------------------------------------
THROTTLE_SCRIPT = r'''
local insider = require "walua.insider"
local function v1()
	return insider.settings_v1{ is_active = true,
	    webhook_url = "https://bot.example.com/h", api_key = "key-0123456789" }
end
local R = {}
R.twice = E(v1())       -- 429, retried once, 429 again: the error
R.once = E(v1())        -- 429, retried once after Retry-After: ok
R.gateway = E(insider.webhooks.list("15551234567"))
out(R)
'''


def test_429_retried_once_after_retry_after():
    with Scratch() as s, FakeInsider() as ins:
        conf = write_conf(s, insider_conf(ins))
        ins.throttle(3, retry_after=1, path=V1_SETTINGS)
        ins.throttle(1, retry_after=1, path=WH_PATH)
        t0 = time.time()
        r = run_lua(s, THROTTLE_SCRIPT, conf, what="throttle")
        took = time.time() - t0
        e = r["twice"]
        assert e["ok"] is False and e["status"] == 429, e
        assert r["once"]["ok"] is True, r["once"]
        assert r["gateway"]["ok"] is True and r["gateway"]["value"] in (
            [], {}), r["gateway"]
        v1 = ins.requests_to(V1_SETTINGS)
        assert [q["status"] for q in v1] == [429, 429, 429, 200], v1
        for a, b in ((0, 1), (2, 3)):
            gap = v1[b]["time"] - v1[a]["time"]
            assert 0.9 <= gap < 3, ("retry did not wait Retry-After", gap)
        assert v1[2]["time"] - v1[1]["time"] < 0.9, "waited after giving up"
        wh = ins.requests_to(WH_PATH)
        assert [q["status"] for q in wh] == [429, 200], wh
        assert wh[1]["time"] - wh[0]["time"] >= 0.9
        assert took < 10, took


# send from a handler -------------------------------------------------------
SEND_HANDLER = r'''
local insider = require "walua.insider"
local crypto = require "walua.crypto"
local log = require "walua.log"
return function(ev)
	if ev.kind ~= "message" then return end
	log.info("calling", { text = ev.text })
	local key, err = insider.send{ to = ev.from, text = "echo: " .. ev.text }
	if key then
		log.info("sent", { key = key, to = ev.from })
	else
		log.warn("send failed", { err = tostring(err), status = err.status,
		    code = err.code })
	end
	log.info("crypto in handler", { hmac = crypto.hmac_sha256(
	    "It's a Secret to Everybody", "Hello, World!") })
end
'''


def send_daemon(ins, creds, limits=""):
    extra = insider_conf(ins, creds=creds) + "\n" + (
        limits or "limits = { retries = 0 },")
    return Daemon(handlers={"bot.lua": SEND_HANDLER}, extra=extra, workers=1,
                  env={v: "" for v in CRED_VARS})


def test_handler_send_v2_with_gateway_credentials():
    with FakeInsider() as ins, send_daemon(ins, creds=True) as d:
        d.deliver(text_body("hello v2", "wamid.OUTSENDV2"))
        (line,) = d.wait_log(lambda l: l.get("msg") in ("sent",
                                                          "send failed"))
        assert line["msg"] == "sent", line
        sent = ins.state["sent"]
        assert len(sent) == 1 and sent[0]["api"] == "v2", sent
        assert line["key"] == sent[0]["key"], (line, sent)
        (r,) = ins.requests_to("/api/wa/v2/conversational/messages/send",
                               "POST")
        assert r["status"] == 200 and ct_json(r), r
        assert bearer_of(r) in ins.state["tokens"], r["headers"]
        assert "x-ins-auth-key" not in r["headers"], r["headers"]
        assert ins.token_requests == 1
        b = r["json"]
        no_camel(b, "v2 send body")
        (item,) = b["messages"]
        assert item["phone_number"] == "+905321234567", item
        assert item["message"] == {"type": "text",
                                   "text": {"body": "echo: hello v2"}}, item
        assert ins.requests_to("/v1/conversational/send") == []
        (c,) = d.wait_log(lambda l: l.get("msg") == "crypto in handler")
        assert c["hmac"] == GH_SIG, c


def test_handler_send_v1_without_gateway_credentials():
    with FakeInsider() as ins, send_daemon(ins, creds=False) as d:
        d.deliver(text_body("hello v1", "wamid.OUTSENDV1"))
        (line,) = d.wait_log(lambda l: l.get("msg") in ("sent",
                                                          "send failed"))
        assert line["msg"] == "sent", line
        sent = ins.state["sent"]
        assert len(sent) == 1 and sent[0]["api"] == "v1", sent
        assert line["key"] == sent[0]["key"], (line, sent)
        (r,) = ins.requests_to("/v1/conversational/send", "POST")
        assert r["status"] == 200 and ct_json(r), r
        assert r["headers"].get("x-ins-auth-key") == DEFAULT_AUTH_KEY
        assert "authorization" not in r["headers"], r["headers"]
        (item,) = r["json"]["messages"]
        assert item["phoneNumber"] == "+905321234567", item
        assert item["message"] == {"type": "text",
                                   "text": {"body": "echo: hello v1"}}, item
        assert ins.token_requests == 0
        assert ins.requests_to("/api/wa/v2/conversational/messages/send") \
            == []


def test_provider_that_never_answers_stays_within_handler_budget():
    with FakeInsider() as ins, send_daemon(
            ins, creds=False,
            limits="limits = { handler_timeout_ms = 1500, retries = 0 },") \
            as d:
        ins.hang = True
        d.deliver(text_body("into the void", "wamid.OUTHANG1"))
        (start,) = d.wait_log(lambda l: l.get("msg") == "calling")
        done = d.wait_log(lambda l: l.get("event") == start["event"] and
                          l.get("msg") in ("send failed", "handler failed",
                                           "event dead-lettered"), timeout=10)
        end = done[0]
        took = ts_of(end) - ts_of(start)
        assert took < 1.65, ("the call outlasted the handler's budget",
                             took, end)
        if end["msg"] == "send failed":
            assert "status" not in end or end["status"] is None, end
            assert end.get("err"), end
        else:
            assert "budget" in end.get("error", "") or \
                "time" in end.get("error", ""), end
        hung = ins.requests_to("/v1/conversational/send")
        assert len(hung) == 1 and hung[0]["status"] is None, hung
        # the daemon goes on
        ins.hang = False
        st, _, body = d.admin_request("GET", "/healthz")
        assert st == 200, (st, body)
        d.deliver(text_body("back again", "wamid.OUTHANG2"))
        (line,) = d.wait_log(lambda l: l.get("msg") == "sent", timeout=10)
        assert line["key"] == ins.state["sent"][-1]["key"], line
        assert ins.state["sent"][-1]["message"]["text"]["body"] == \
            "echo: back again"


# walua.http ----------------------------------------------------------------
BIG = 8 * 1024 * 1024


class _Tiny(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send(self, status, body=b"", ctype=None, headers=()):
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _serve(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        self.server.seen.append((self.command, self.path,
                                 {k.lower(): v for k, v in
                                  self.headers.items()}, body))
        p = self.path.split("?")[0]
        if p == "/echo":
            self._send(200, json.dumps({
                "method": self.command, "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace")}).encode(),
                "application/json", [("X-Mixed-Case", "Yes")])
        elif p == "/text":
            self._send(200, b'{"not": "json by content type"}', "text/plain")
        elif p == "/redirect":
            self._send(302, b"", None, [("Location", "/echo?followed=1")])
        elif p == "/big":
            self._send(200, b"a" * (BIG + 1), "application/octet-stream")
        elif p == "/exact":
            self._send(200, b"b" * BIG, "application/octet-stream")
        elif p == "/slow":
            time.sleep(3)
            self._send(200, b"late", "text/plain")
        else:
            self._send(404, b"", None)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


class TinyServer:
    def __enter__(self):
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), _Tiny)
        self.srv.daemon_threads = True
        self.srv.block_on_close = False
        self.srv.seen = []
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]
        self.t = threading.Thread(target=self.srv.serve_forever,
                                  kwargs={"poll_interval": 0.1}, daemon=True)
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.srv.shutdown()
        self.srv.server_close()
        self.t.join(5)
        return False


HTTP_SCRIPT = r'''
local http = require "walua.http"
local U, DEAD = ...
local R = {}
local function res(r, err)
	if not r then return E(r, err) end
	return { ok = true, status = r.status, headers = r.headers,
	    body_len = #r.body, body = #r.body < 4096 and r.body or nil,
	    json = r.json }
end
R.get = res(http.get(U .. "/echo?a=1", { headers = { ["X-Test"] = "one" } }))
R.post_json = res(http.post(U .. "/echo", { name = "Ayşe", n = 3,
    list = json.array({ 1, 2 }) }))
R.post_body = res(http.post(U .. "/echo", "raw=1&b=2",
    { headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } }))
R.request_json = res(http.request{ method = "PUT", url = U .. "/echo",
    json = { x = true } })
R.text = res(http.get(U .. "/text"))
R.redirect = res(http.get(U .. "/redirect"))
R.big = res(http.get(U .. "/big"))
R.exact = res(http.get(U .. "/exact"))
R.file = res(http.get("file:///etc/passwd"))
R.ftp = res(http.request{ url = "ftp://127.0.0.1/x" })
R.refused = res(http.get(DEAD .. "/x"))
R.timeout = res(http.get(U .. "/slow", { timeout_ms = 300 }))
R.raises = not pcall(http.request, "not a table")
out(R)
'''


def test_walua_http_basics():
    with Scratch() as s, TinyServer() as tiny:
        conf = write_conf(s)
        dead = "http://127.0.0.1:%d" % free_port()
        t0 = time.time()
        r = run_lua(s, HTTP_SCRIPT, conf, tiny.url, dead, what="walua.http")
        took = time.time() - t0
        g = r["get"]
        assert g["ok"] and g["status"] == 200, g
        assert g["json"]["method"] == "GET" and \
            g["json"]["path"] == "/echo?a=1", g
        assert g["json"]["headers"].get("x-test") == "one", g
        # response headers by lower-case name
        assert g["headers"].get("x-mixed-case") == "Yes", g["headers"]
        assert "X-Mixed-Case" not in g["headers"], g["headers"]
        assert g["headers"]["content-type"] == "application/json", g
        # a json body: encoded, with Content-Type application/json
        pj = r["post_json"]
        assert pj["status"] == 200 and pj["json"]["method"] == "POST", pj
        assert pj["json"]["headers"]["content-type"] == "application/json", pj
        assert json.loads(pj["json"]["body"]) == {
            "name": "Ayşe", "n": 3, "list": [1, 2]}, pj["json"]["body"]
        pb = r["post_body"]
        assert pb["json"]["body"] == "raw=1&b=2", pb
        assert pb["json"]["headers"]["content-type"] == \
            "application/x-www-form-urlencoded", pb
        rj = r["request_json"]
        assert rj["json"]["method"] == "PUT" and \
            json.loads(rj["json"]["body"]) == {"x": True}, rj
        assert rj["json"]["headers"]["content-type"] == "application/json"
        # json only for JSON answers
        t = r["text"]
        assert t["status"] == 200 and t.get("json") is None and \
            t["body"] == '{"not": "json by content type"}', t
        # no redirects followed
        rd = r["redirect"]
        assert rd["ok"] and rd["status"] == 302, rd
        assert rd["headers"].get("location") == "/echo?followed=1", rd
        assert not any("followed" in p for _, p, _, _ in tiny.srv.seen), \
            tiny.srv.seen
        # size cap
        assert r["big"]["ok"] is False and r["big"].get("status") is None, \
            r["big"]
        assert r["big"]["message"], r["big"]
        assert r["exact"]["ok"] and r["exact"]["body_len"] == BIG, {
            k: v for k, v in r["exact"].items() if k != "body"}
        # only http(s)
        for k in ("file", "ftp", "refused"):
            assert r[k]["ok"] is False and r[k].get("status") is None and \
                r[k]["message"] and r[k]["has_tostring"], (k, r[k])
        assert "root:" not in json.dumps(r["file"]), r["file"]
        # timeout_ms
        assert r["timeout"]["ok"] is False, r["timeout"]
        assert r["raises"] is True
        assert took < 8, took


HEADERS_SCRIPT = r'''
local http = require "walua.http"
local log = require "walua.log"
local U = ...
local h = {}
for i = 1, 60 do h["X-H" .. i] = "v" .. i end
local R = {}
local r, err = http.get(U .. "/echo", { headers = h })
R.sixty = r and r.json and r.json.headers or E(r, err)
for _, m in ipairs({ "GET\r\nX-Evil: 1", "GET /x", "", "G\0ET" }) do
	local ok, e = pcall(http.request, { url = U .. "/echo", method = m })
	R[#R + 1] = ok and "sent" or tostring(e)
end
R.patch = (http.request{ url = U .. "/echo", method = "PATCH" } or {}).status
-- a field whose __tostring raises: the log call fails, nothing leaks
local function rss()
	for line in io.lines("/proc/self/status") do
		local kb = line:match("^VmRSS:%s+(%d+)")
		if kb then return tonumber(kb) end
	end
end
local bad = setmetatable({ f = print }, { __tostring = function() error("no") end })
local pad = string.rep("x", 2000)
for _ = 1, 2000 do pcall(log.debug, "m", { a = pad, b = bad }) end
collectgarbage()
local before = rss()
for _ = 1, 20000 do pcall(log.debug, "m", { a = pad, b = bad }) end
collectgarbage()
R.log_growth_kib = rss() - before
out(R)
'''


def test_walua_http_many_headers_and_bad_methods():
    """60 request headers all reach the server (each is kept on the Lua
    stack while curl runs); a method that is not an HTTP token raises
    before anything is sent; a log call whose field raises in __tostring
    leaks nothing (20,000 of them leaked 40 MiB before)."""
    with Scratch() as s, TinyServer() as tiny:
        conf = write_conf(s, 'log_level = "debug"')
        r = run_lua(s, HEADERS_SCRIPT, conf, tiny.url, what="headers")
        got = {k: v for k, v in r["sixty"].items() if k.startswith("x-h")}
        assert got == {"x-h%d" % i: "v%d" % i for i in range(1, 61)}, \
            r["sixty"]
        for e in r["1"], r["2"], r["3"], r["4"]:
            assert "method must be an HTTP token" in e, r
        assert r["patch"] == 200, r
        assert not any("Evil" in repr(x) for x in tiny.srv.seen)
        print("     60 headers sent; bad methods refused; RSS grew %d KiB "
              "over 20,000 raising log calls" % r["log_growth_kib"])
        assert r["log_growth_kib"] < 4096, r["log_growth_kib"]


STORE_TTL_SCRIPT = r'''
local store = require "walua.store"
local R = {}
for name, ttl in pairs({ huge = math.huge, big = 1e300, day = 86400 }) do
	R[name .. "_set"] = store.set("ttl-" .. name, name, ttl)
	R[name .. "_get"] = store.get("ttl-" .. name)
end
R.nan = select(2, pcall(store.set, "ttl-nan", 1, 0 / 0))
out(R)
'''


def test_store_ttl_past_range_and_a_long_script_path():
    """A TTL of math.huge (or past 100 years) keeps the value for good (it
    was cast to an integer out of range: undefined, and the value came
    back expired); a NaN TTL raises.  The script runs from a path longer
    than 512 bytes (a fixed buffer took it before)."""
    with Scratch() as s:
        conf = write_conf(s, 'database = "walua.db"')
        deep = os.path.join(s.dir, *(["d" * 60] * 12))
        os.makedirs(deep)
        with open(os.path.join(deep, "store.lua"), "w") as f:
            f.write(LUA_PRELUDE + STORE_TTL_SCRIPT)
        path = os.path.join(deep, "store.lua")
        assert len(path) > 700, len(path)
        p = wrun(path, conf=conf)
        assert p.returncode == 0, show(p)
        r = out_json(p, "store ttl")
        print("     from a %d-byte path: %s" % (len(path), json.dumps(r)))
        for name in ("huge", "big", "day"):
            assert r[name + "_set"] is True and r[name + "_get"] == name, r
        assert "number of seconds" in r["nan"], r


# walua.crypto --------------------------------------------------------------
CRYPTO_SCRIPT = r'''
local crypto = require "walua.crypto"
local a, b = crypto.random_hex(16), crypto.random_hex(16)
out({ hmac = crypto.hmac_sha256("It's a Secret to Everybody", "Hello, World!"),
    hmac_bin = crypto.hmac_sha256("k\0ey", "da\0ta"),
    sha_empty = crypto.sha256(""), sha_abc = crypto.sha256("abc"),
    r1 = a, r2 = b, r3 = crypto.random_hex(1),
    eq = crypto.equal("abc", "abc"), ne = crypto.equal("abc", "abd"),
    ne_len = crypto.equal("abc", "abcd"), eq_empty = crypto.equal("", "") })
'''


def test_walua_crypto():
    with Scratch() as s:
        conf = write_conf(s)
        r = run_lua(s, CRYPTO_SCRIPT, conf, what="walua.crypto")
        assert r["hmac"] == GH_SIG, r
        assert r["hmac_bin"] == hmac.new(b"k\0ey", b"da\0ta",
                                         hashlib.sha256).hexdigest(), r
        assert r["sha_empty"] == SHA256_EMPTY, r
        assert r["sha_abc"] == hashlib.sha256(b"abc").hexdigest(), r
        for k in ("r1", "r2"):
            assert len(r[k]) == 32 and all(c in "0123456789abcdef"
                                           for c in r[k]), r
        assert r["r1"] != r["r2"], r
        assert len(r["r3"]) == 2, r
        assert (r["eq"], r["ne"], r["ne_len"], r["eq_empty"]) == (
            True, False, False, True), r


# simulate ------------------------------------------------------------------
SIM_BEARER = "sim-bearer-token-0123456789"
SIM_CLIENT_SECRET = "sim-oauth-client-secret-42"
SIM_KAPSO = "sim-kapso-secret-13579"
SIM_META = "sim-meta-app-secret-24680"
SIM_ENDPOINTS = (
    '{ { path = "/webhooks/insider", provider = "insider",\n'
    '    auth = { type = "bearer", token = %s } },\n'
    '  { path = "/webhooks/insider-oauth", provider = "insider",\n'
    '    auth = { type = "oauth2" } },\n'
    '  { path = "/webhooks/kapso", provider = "kapso",\n'
    '    auth = { type = "kapso", secret = %s } },\n'
    '  { path = "/webhooks/meta", provider = "meta",\n'
    '    auth = { type = "meta", app_secret = %s, verify_token = "vt" } } }'
    % (lua_str(SIM_BEARER), lua_str(SIM_KAPSO), lua_str(SIM_META)))
SIM_OAUTH = ('oauth2 = { path = "/oauth/token", clients = {\n'
             '  { id = "insider", secret = %s, scopes = { "webhook.write" } } } },'
             % lua_str(SIM_CLIENT_SECRET))

# (type, expected kind, expected ev.type, expected ev.status)
COMMON_TYPES = [("text", "message", "text", None),
                ("button", "message", "button", None),
                ("image", "message", "image", None),
                ("status", "status", None, "sent"),
                ("failed", "status", None, "failed")]
SIM_CASES = {
    "/webhooks/insider": ("insider", COMMON_TYPES + [
        ("error", "error", None, None), ("accepted", "accepted", None, None),
        ("template", "template", None, None)]),
    "/webhooks/insider-oauth": ("insider", COMMON_TYPES + [
        ("error", "error", None, None), ("accepted", "accepted", None, None),
        ("template", "template", None, None)]),
    "/webhooks/kapso": ("kapso", COMMON_TYPES + [
        ("conversation", "conversation", None, None)]),
    "/webhooks/meta": ("meta", COMMON_TYPES + [
        ("error", "error", None, None)]),
}
SIM_FLAGS = {
    "/webhooks/insider": ["--provider", "insider", "--token", SIM_BEARER],
    "/webhooks/insider-oauth": ["--provider", "insider", "--client-id",
                                "insider", "--client-secret",
                                SIM_CLIENT_SECRET],
    "/webhooks/kapso": ["--provider", "kapso", "--secret", SIM_KAPSO],
    "/webhooks/meta": ["--provider", "meta", "--app-secret", SIM_META],
}


def sim_daemon():
    return Daemon(endpoints=SIM_ENDPOINTS, extra=SIM_OAUTH, workers=1)


def is_handled(l):
    return l.get("msg") == "handled"


def check_handled(d, n, ep, provider, kind, typ, status, what):
    lines = d.wait_log(is_handled, count=n, timeout=10)
    assert len(lines) == n, ("more handled lines than deliveries", what,
                             lines[n - 1:])
    h = lines[-1]
    assert h.get("endpoint") == ep and h.get("provider") == provider, (what, h)
    assert h.get("kind") == kind, (what, "kind", h)
    if typ is not None:
        assert h.get("type") == typ, (what, "type", h)
    if status is not None:
        assert h.get("status") == status, (what, "status", h)
    return h


def test_simulate_every_provider_and_auth_kind():
    with sim_daemon() as d, Scratch() as s:
        base = "http://127.0.0.1:%d" % d.port
        n = 0
        p = wrun("simulate", "--help", cwd=s.dir)
        ok(p, "simulate --help")
        assert "--url" in p.stdout, show(p)
        # credentials from the daemon's config
        for ep, (provider, cases) in SIM_CASES.items():
            for typ, kind, mtype, status in cases:
                what = "simulate -c %s --type %s" % (ep, typ)
                p = wrun("simulate", "--url", base + ep, "--type", typ,
                         conf=d.conf, cwd=s.dir)
                ok(p, what)
                assert "200" in p.stdout, (what, show(p))
                assert_not_printed(p, [SIM_BEARER, SIM_CLIENT_SECRET,
                                       SIM_KAPSO, SIM_META], what)
                n += 1
                check_handled(d, n, ep, provider, kind, mtype, status, what)
        # credentials from flags (no config: run in an empty folder)
        for ep, flags in SIM_FLAGS.items():
            provider = SIM_CASES[ep][0]
            for typ, kind, mtype, status in (COMMON_TYPES[0], COMMON_TYPES[3]):
                what = "simulate flags %s --type %s" % (ep, typ)
                p = wrun("simulate", "--url", base + ep, "--type", typ,
                         "--text", "flagged", *flags, cwd=s.dir)
                ok(p, what)
                assert "200" in p.stdout, (what, show(p))
                n += 1
                check_handled(d, n, ep, provider, kind, mtype, status, what)
        # --json
        p = ok(wrun("simulate", "--url", base + "/webhooks/kapso", "--type",
                    "text", "--json", conf=d.conf, cwd=s.dir), "--json")
        j = out_json(p, "simulate --json")
        assert j["status"] == 200 and j["answer"]["events"] == 1, j
        n += 1
        check_handled(d, n, "/webhooks/kapso", "kapso", "message", "text",
                      None, "--json")
        # wrong credentials: exit 1, 401, nothing handled
        wrong = [("/webhooks/kapso", ["--provider", "kapso", "--secret",
                                      "not-the-secret"]),
                 ("/webhooks/meta", ["--provider", "meta", "--app-secret",
                                     "not-the-secret"]),
                 ("/webhooks/insider", ["--provider", "insider", "--token",
                                        "not-the-token"])]
        for ep, flags in wrong:
            what = "wrong secret " + ep
            p = wrun("simulate", "--url", base + ep, "--type", "text",
                     *flags, cwd=s.dir)
            failed(p, what)
            assert "401" in p.stdout + p.stderr, (what, show(p))
        p = wrun("simulate", "--url", base + "/webhooks/insider-oauth",
                 "--provider", "insider", "--client-id", "insider",
                 "--client-secret", "not-the-secret", cwd=s.dir)
        failed(p, "wrong client secret")
        assert "401" in p.stdout + p.stderr, show(p)
        # nothing of those was handled: a last good one is number n + 1
        ok(wrun("simulate", "--url", base + "/webhooks/meta", "--type", "text",
                conf=d.conf, cwd=s.dir))
        n += 1
        time.sleep(0.2)
        check_handled(d, n, "/webhooks/meta", "meta", "message", "text", None,
                      "after refusals")


def test_simulate_kapso_error_type():
    """`--type error` is listed for every provider; Kapso has no error
    event, so simulate must send something Kapso sends (a failed message
    status) or say the type does not apply, not a message without a type."""
    with sim_daemon() as d, Scratch() as s:
        base = "http://127.0.0.1:%d" % d.port
        p = wrun("simulate", "--url", base + "/webhooks/kapso", "--type",
                 "error", conf=d.conf, cwd=s.dir)
        if p.returncode == 2:
            return              # refused as not applicable: fine
        ok(p, "simulate kapso --type error")
        assert "200" in p.stdout, show(p)
        (h,) = d.wait_log(is_handled)
        assert h["kind"] in ("error", "status"), (
            "kapso --type error was handled as", h)
