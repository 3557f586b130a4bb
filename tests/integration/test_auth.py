"""Authentication, black-box: endpoints[].auth and oauth2 (README,
Configuration), the answers and the token endpoint (README, HTTP answers),
what Insider One does as an OAuth2 client (see insider_client.py), Kapso's
signature, and Meta's subscription handshake and signature.

"Nothing reached Lua" is proved without sleeping, as in test_http.py: the
daemons run one worker; after the refusals a marker event is delivered and
once its "handled" line is in the log, anything stored before it would have
been handled already, so the only "handled" lines must be the expected ones.
Refusals that reuse a message id or idempotency key are sent BEFORE the
valid delivery carrying it, so a refused body that was stored anyway would
also show up as the valid one being counted a duplicate.
"""
import hashlib
import hmac
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import urllib.parse
import uuid

from harness import Daemon, lua_str, sqlite_only, text_body
from insider_client import InsiderClient, basic_header, HEX64

# run again with each daemon on PostgreSQL (tests/run.py): tokens there
PG_AGAIN = True

OAUTH_EP = "/webhooks/insider-oauth"
KAPSO_EP = "/webhooks/kapso"
META_EP = "/webhooks/meta"
TOKEN_PATH = "/oauth/token"

CLIENT_ID = "insider"
CLIENT_SECRET = "s3:cr+t/x"            # ':' '+' '/' need form-encoding
CLIENT_SECRET_FORM = "s3%3Acr%2Bt%2Fx"
REFRESH = "refresh-8d1f0c2b9e7a4d35"
SCOPES = ("webhook.write", "webhook.read")
KAPSO_SECRET = "kapso-whsec-5b7e1d9c3a"
META_SECRET = "meta-appsecret-2c4e6a8b0d"
VERIFY_TOKEN = "meta verify/tok+7"     # needs percent-encoding in a URL

# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIG = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

MARKER_TEXT = "auth-settle-marker"
NON_ASCII = "Çok güzel 👍"

_ids = itertools.count(1)
SENT_SIGNATURES = set()     # every signature hex any test sent


def new_id(tag="A"):
    return "wamid.AUTH%s%d" % (tag, next(_ids))


# config ------------------------------------------------------------------
def endpoints(kapso_secret=KAPSO_SECRET, meta_secret=META_SECRET,
              verify_token=VERIFY_TOKEN):
    return ('{ { path = "%s", provider = "insider", auth = { type = "oauth2" } },\n'
            '  { path = "%s", provider = "kapso",\n'
            '    auth = { type = "kapso", secret = %s } },\n'
            '  { path = "%s", provider = "meta",\n'
            '    auth = { type = "meta", app_secret = %s, verify_token = %s } } }'
            % (OAUTH_EP, KAPSO_EP, lua_str(kapso_secret), META_EP,
               lua_str(meta_secret), lua_str(verify_token)))


def oauth_extra(ttl=3600, more_clients=""):
    return ('oauth2 = { path = "%s", token_ttl = %d, clients = {\n'
            '  { id = %s, secret = %s, refresh_token = %s,\n'
            '    scopes = { %s } }, %s } },'
            % (TOKEN_PATH, ttl, lua_str(CLIENT_ID), lua_str(CLIENT_SECRET),
               lua_str(REFRESH), ", ".join(lua_str(s) for s in SCOPES),
               more_clients))


def auth_daemon(ttl=3600, more_clients="", **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("log_level", "debug")
    kw.setdefault("endpoints", endpoints())
    return Daemon(extra=oauth_extra(ttl, more_clients), **kw)


def client(d, **kw):
    kw.setdefault("refresh_token", REFRESH)
    return InsiderClient(d, CLIENT_ID, CLIENT_SECRET, token_path=TOKEN_PATH,
                         endpoint=OAUTH_EP, **kw)


# small helpers -----------------------------------------------------------
def sign(secret, body):
    if isinstance(secret, str):
        secret = secret.encode()
    sig = hmac.new(secret, body, hashlib.sha256).hexdigest()
    SENT_SIGNATURES.add(sig)
    return sig


def json_of(body):
    try:
        return json.loads(body)
    except ValueError:
        raise AssertionError("body is not JSON: %r" % body[:300])


def is_handled(l):
    return l.get("msg") == "handled"


def handled(d):
    return [l for l in d.find(is_handled) if l.get("text") != MARKER_TEXT]


def settle(d, c):
    """Deliver a marker through the oauth2 endpoint with client c, wait
    until it is handled; return every other "handled" line so far."""
    m = new_id("MARK")
    st, _, resp = c.deliver(text_body(MARKER_TEXT, m))
    assert st == 200, ("marker refused", st, resp)
    assert json_of(resp) == {"ok": True, "events": 1, "duplicates": 0}, resp
    d.wait_log(lambda l: is_handled(l) and l.get("message_id") == m)
    return handled(d)


def assert_acked(answer, events=1, duplicates=0, what=""):
    st, _, body = answer
    assert st == 200, (what, st, body[:300])
    assert json_of(body) == {"ok": True, "events": events,
                             "duplicates": duplicates}, (what, body)


def assert_401(answer, what=""):
    st, h, body = answer
    assert st == 401, "%s: expected 401, got %d %r" % (what, st, body[:300])
    j = json_of(body)
    assert isinstance(j, dict) and j.get("ok") is False and j.get("error"), \
        (what, j)
    return h


def assert_invalid_token(answer, what=""):
    h = assert_401(answer, what)
    wa = h.get("www-authenticate", "")
    assert re.match(r'(?i)bearer\b', wa) and \
        re.search(r'error="invalid_token"', wa), (what, h)


# token endpoint --------------------------------------------------------
def tok(d, form=None, js=None, basic=None, headers=None, method="POST"):
    """One token request. form: a dict (urlencoded) or a str (sent as is);
    js: a dict sent as JSON; basic: (id, secret) for HTTP Basic."""
    h = dict(headers or {})
    body = None
    if form is not None:
        h.setdefault("Content-Type", "application/x-www-form-urlencoded")
        body = form if isinstance(form, str) else urllib.parse.urlencode(form)
    elif js is not None:
        h.setdefault("Content-Type", "application/json")
        body = json.dumps(js)
    if basic is not None:
        h["Authorization"] = basic_header(*basic)
    st, hs, resp = d.request(method, TOKEN_PATH, body, h)
    return st, hs, resp


def assert_no_cache(h, what):
    assert h.get("cache-control", "").lower() == "no-store", (what, h)
    assert h.get("pragma", "").lower() == "no-cache", (what, h)


def expect_token(ans, what, scopes=SCOPES, refresh=None):
    st, h, body = ans
    assert st == 200, "%s: expected 200, got %d %r" % (what, st, body[:300])
    assert h.get("content-type", "").startswith("application/json"), (what, h)
    assert_no_cache(h, what)
    j = json_of(body)
    assert HEX64.match(j.get("access_token", "")), (what, j)
    assert j.get("token_type") == "Bearer", (what, j)
    assert isinstance(j.get("expires_in"), int) and j["expires_in"] > 0, \
        (what, j)
    assert isinstance(j.get("scope"), str), (what, j)
    assert j["scope"].split(" ") and set(j["scope"].split(" ")) == \
        set(scopes) and len(j["scope"].split(" ")) == len(scopes), (what, j)
    if refresh is not None:
        assert j.get("refresh_token") == refresh, (what, j)
    return j["access_token"]


def expect_error(ans, status, error, what, basic=False):
    st, h, body = ans
    assert st == status, "%s: expected %d %s, got %d %r" % (
        what, status, error, st, body[:300])
    assert h.get("content-type", "").startswith("application/json"), (what, h)
    assert_no_cache(h, what)
    j = json_of(body)
    assert j.get("error") == error, "%s: expected error %s, got %r" % (
        what, error, j)
    assert "access_token" not in j, (what, j)
    if basic:
        assert h.get("www-authenticate", "").lower().startswith("basic"), \
            (what, "no WWW-Authenticate: Basic", h)
    return h


# kapso / meta deliveries ---------------------------------------------------
def kapso_message(text, message_id, conv="conv_auth_1"):
    return {"message": {"id": message_id, "timestamp": "1730092800",
                        "type": "text", "text": {"body": text},
                        "kapso": {"direction": "inbound",
                                  "status": "received",
                                  "processing_status": "pending",
                                  "origin": "cloud_api"}},
            "conversation": {"id": conv, "phone_number": "+905321234567",
                             "status": "active",
                             "phone_number_id": "123456789012345"},
            "is_new_conversation": False,
            "phone_number_id": "123456789012345"}


def kapso_body(text, message_id, conv="conv_auth_1"):
    return json.dumps(kapso_message(text, message_id, conv),
                      ensure_ascii=False).encode("utf-8")


def kapso_post(d, body, sig=None, secret=KAPSO_SECRET, key=None,
               event="whatsapp.message.received", headers=None):
    """sig: None signs body with secret; False sends no signature header;
    a str is sent as it is."""
    h = {"Content-Type": "application/json", "X-Webhook-Event": event,
         "X-Idempotency-Key": key or str(uuid.uuid4()),
         "X-Webhook-Payload-Version": "v2"}
    if sig is None:
        sig = sign(secret, body)
    if sig is not False:
        h["X-Webhook-Signature"] = sig
    h.update(headers or {})
    return d.request("POST", KAPSO_EP, body, h)


def meta_body(text, message_id, ensure_ascii=False):
    return json.dumps({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "908502123456",
                             "phone_number_id": "106540352242922"},
                "contacts": [{"profile": {"name": "Ayşe"},
                              "wa_id": "905321234567"}],
                "messages": [{"from": "905321234567", "id": message_id,
                              "timestamp": "1749416383",
                              "text": {"body": text},
                              "type": "text"}]}}]}]},
        ensure_ascii=ensure_ascii).encode("utf-8")


def meta_post(d, body, sig=None, secret=META_SECRET):
    """sig: None -> "sha256=" + HMAC(secret, body); False -> no header."""
    h = {"Content-Type": "application/json"}
    if sig is None:
        sig = "sha256=" + sign(secret, body)
    if sig is not False:
        h["X-Hub-Signature-256"] = sig
    return d.request("POST", META_EP, body, h)


def handshake(d, **params):
    q = urllib.parse.urlencode(params)
    return d.request("GET", META_EP + ("?" + q if q else ""))


# metrics -------------------------------------------------------------------
METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metrics_text(d):
    st, _, body = d.admin_request("GET", "/metrics")
    assert st == 200, (st, body[:300])
    return body.decode("utf-8")


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        assert m, "not a Prometheus sample line: %r" % line
        out[(m.group(1), tuple(sorted(LABEL.findall(m.group(2) or ""))))] = \
            float(m.group(3))
    return out


def metric_sum(ms, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in ms.items()
               if n == name and want <= set(ls))


def acked_total(d):
    return metric_sum(parse_metrics(metrics_text(d)),
                      "walua_events_acked_total")


# secret scan ---------------------------------------------------------------
def variants(s):
    """s as it could be written into a log: raw, JSON-escaped (cjson writes
    '/' as '\\/'), URL/form-encoded."""
    out = {s, json.dumps(s, ensure_ascii=False)[1:-1],
           json.dumps(s)[1:-1],
           json.dumps(s, ensure_ascii=False)[1:-1].replace("/", "\\/"),
           urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s)}
    return {v for v in out if len(v) >= 6}


def leaked_in(text, secrets):
    found = []
    for s in secrets:
        for v in variants(s):
            if v in text or v.lower() in text.lower():
                found.append((s, v))
                break
    return found


def all_strings(x):
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield k
            yield from all_strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from all_strings(v)


def assert_no_secrets(d, secrets):
    secrets = [s for s in secrets if s]
    text = d.log_text()
    leaked = leaked_in(text, secrets)
    # and in the decoded values of every JSON line (any escaping)
    decoded = "\n".join(s for l in d.logs() for s in all_strings(l))
    leaked += leaked_in(decoded, secrets)
    assert not leaked, "secrets in the log: %r" % sorted(set(
        v for _, v in leaked))[:10]


def config_secrets(c=None):
    out = [CLIENT_SECRET, CLIENT_SECRET_FORM, REFRESH, KAPSO_SECRET,
           META_SECRET, VERIFY_TOKEN,
           basic_header(CLIENT_ID, CLIENT_SECRET).split(" ", 1)[1]]
    out += sorted(SENT_SIGNATURES)
    if c is not None:
        out += c.issued
    return out


# database --------------------------------------------------------------------
def db_files(d):
    return [os.path.join(d.dir, f) for f in os.listdir(d.dir)
            if f.startswith("walua.db")]


def db_dump(d):
    if d.database is not None:      # the PostgreSQL pass (tests/run.py)
        p = subprocess.run(["pg_dump", "--data-only", "-d", d.database],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        import pgcluster
        tables = set(pgcluster.shared().psql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            d.database.rsplit("/", 1)[1]).split())
        return tables, p.stdout
    con = sqlite3.connect(os.path.join(d.dir, "walua.db"), timeout=5)
    try:
        tables = {r[0] for r in con.execute(
            "select name from sqlite_master where type = 'table'")}
        return tables, "\n".join(con.iterdump())
    finally:
        con.close()


def assert_tokens_hashed(d, tokens):
    tables, dump = db_dump(d)
    assert "oauth_tokens" in tables, tables
    low = dump.lower()
    for t in tokens:
        assert t not in low, "a raw access token is in the database"
        h = hashlib.sha256(t.encode()).hexdigest()
        assert h in low, "sha256 of an issued token not in the database"
    for path in db_files(d):
        with open(path, "rb") as f:
            data = f.read()
        for t in tokens:
            assert t.encode() not in data and t.upper().encode() not in data, \
                "a raw access token is in %s" % path


# 1. Insider-like client ----------------------------------------------------
def test_insider_client_tokens_deliveries_refresh_restart():
    with auth_daemon() as d:
        c = client(d)
        ids = [new_id("C") for _ in range(3)]
        for i, m in enumerate(ids):
            assert_acked(c.deliver(text_body("client %d" % i, m)),
                         what="delivery %d" % i)
        # one token fetched, cached and reused for the three deliveries
        assert c.token_requests == 1 and c.renewals_on_401 == 0, \
            (c.token_requests, c.renewals_on_401)
        assert c.expires_in == 3600, c.expires_in
        lines = d.wait_log(is_handled, count=3)
        assert [(l["message_id"], l["text"], l["endpoint"], l["provider"])
                for l in lines] == [(m, "client %d" % i, OAUTH_EP, "insider")
                                    for i, m in enumerate(ids)], lines

        # refresh_token grant: a new token, the same refresh token echoed
        first = c.token
        c.fetch_token("refresh_token")
        assert c.token != first
        m = new_id("R")
        assert_acked(c.deliver(text_body("after refresh", m)))
        d.wait_log(lambda l: is_handled(l) and l.get("message_id") == m)
        assert c.token_requests == 2 and c.renewals_on_401 == 0

        # stored only as SHA-256
        assert_tokens_hashed(d, c.issued)

        # the same token is accepted after a restart, without a new fetch
        assert d.stop() == 0
        assert_tokens_hashed(d, c.issued)
        d.restart()
        m = new_id("RS")
        assert_acked(c.deliver(text_body("after restart", m)))
        assert c.token_requests == 2 and c.renewals_on_401 == 0, \
            "the token was refused after a restart"
        d.wait_log(lambda l: is_handled(l) and l.get("message_id") == m)
        assert_no_secrets(d, config_secrets(c))


def test_expired_token_is_refused_and_client_renews():
    with auth_daemon(ttl=2) as d:
        c = client(d)
        m1 = new_id("E")
        assert_acked(c.deliver(text_body("before expiry", m1)))
        assert c.expires_in == 2, c.expires_in
        old = c.token
        time.sleep(3)
        m2 = new_id("E")
        assert_invalid_token(c.post(text_body("with an expired token", m2),
                                    token=old), "expired token")
        # the client is told 401, renews (refresh grant) and delivers
        assert_acked(c.deliver(text_body("after renewal", m2)))
        assert c.renewals_on_401 == 1 and c.token != old
        seen = [(l["message_id"], l["text"]) for l in settle(d, c)]
        assert seen == [(m1, "before expiry"), (m2, "after renewal")], seen
        assert_no_secrets(d, config_secrets(c))


def test_oauth2_endpoint_accepts_only_live_tokens_issued_here():
    with auth_daemon() as d:
        c = client(d)
        c.fetch_token()
        live = c.token
        body = text_body("must not arrive", new_id("X"))
        refusals = [
            ("missing", {}),
            ("wrong", {"Authorization": "Bearer wrong-token"}),
            ("random 64 hex", {"Authorization": "Bearer " + "ab" * 32}),
            ("prefix of live", {"Authorization": "Bearer " + live[:-1]}),
            ("live + 1", {"Authorization": "Bearer " + live + "0"}),
            ("sha256 of live", {"Authorization": "Bearer " +
                                hashlib.sha256(live.encode()).hexdigest()}),
            ("refresh token", {"Authorization": "Bearer " + REFRESH}),
            ("client secret", {"Authorization": "Bearer " + CLIENT_SECRET}),
            ("basic client creds", {"Authorization":
                                    basic_header(CLIENT_ID, CLIENT_SECRET)}),
            ("basic live token", {"Authorization": "Basic " + live}),
            ("bare live token", {"Authorization": live}),
        ]
        for what, h in refusals:
            h = dict(h, **{"Content-Type": "application/json"})
            assert_invalid_token(d.request("POST", OAUTH_EP, body, h), what)
        assert settle(d, c) == [], "refused deliveries reached Lua"
        assert acked_total(d) == 1, "refused deliveries were stored"
        assert_no_secrets(d, config_secrets(c))


# 2. token endpoint ---------------------------------------------------------
def test_token_endpoint_client_authentication():
    cc = {"grant_type": "client_credentials"}
    creds = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    with auth_daemon() as d:
        tokens = []
        # HTTP Basic, id and secret form-encoded before Base64 (%3A %2B %2F)
        tokens.append(expect_token(tok(d, form=cc,
                                       basic=(CLIENT_ID, CLIENT_SECRET)),
                                   "basic + form"))
        # credentials in a form body, the secret as %3A / %2B / %2F
        tokens.append(expect_token(tok(
            d, form="grant_type=client_credentials&client_id=insider"
                    "&client_secret=" + CLIENT_SECRET_FORM), "form body"))
        # credentials in a JSON body (the secret unencoded)
        tokens.append(expect_token(tok(d, js=dict(cc, **creds)), "json body"))
        # JSON grant with Basic credentials
        tokens.append(expect_token(tok(d, js=cc,
                                       basic=(CLIENT_ID, CLIENT_SECRET)),
                                   "basic + json"))
        assert len(set(tokens)) == len(tokens), "a token was issued twice"
        for t in tokens:                  # each works on the oauth2 endpoint
            m = new_id("T")
            assert_acked(d.post(OAUTH_EP, text_body("tok", m), token=t))

        # both Basic and body credentials: not allowed (RFC 6749 §2.3)
        expect_error(tok(d, form=dict(cc, **creds),
                         basic=(CLIENT_ID, CLIENT_SECRET)),
                     400, "invalid_request", "basic and body")
        expect_error(tok(d, js=dict(cc, **creds),
                         basic=(CLIENT_ID, CLIENT_SECRET)),
                     400, "invalid_request", "basic and json body")

        # wrong secret (3 of them: under the throttling threshold)
        expect_error(tok(d, form=cc, basic=(CLIENT_ID, "s3:cr+t/y")),
                     401, "invalid_client", "wrong secret basic", basic=True)
        expect_error(tok(d, form=dict(cc, client_id=CLIENT_ID,
                                      client_secret="wrong-secret")),
                     401, "invalid_client", "wrong secret body")
        # a raw '+' in a form body decodes to a space: a wrong secret
        expect_error(tok(d, form="grant_type=client_credentials"
                                 "&client_id=insider&client_secret=s3:cr+t/x"),
                     401, "invalid_client", "unencoded '+' in form body")
        # unknown client
        expect_error(tok(d, form=cc, basic=("nobody", CLIENT_SECRET)),
                     401, "invalid_client", "unknown client basic", basic=True)
        expect_error(tok(d, js=dict(cc, client_id="nobody",
                                    client_secret=CLIENT_SECRET)),
                     401, "invalid_client", "unknown client json")
        # no credentials at all
        expect_error(tok(d, form=cc), 401, "invalid_client", "no credentials")

        # the right secret still works afterwards
        expect_token(tok(d, form=cc, basic=(CLIENT_ID, CLIENT_SECRET)),
                     "basic after failures")
        assert_no_secrets(d, config_secrets() + tokens)


def test_token_endpoint_grants_scopes_and_methods():
    creds = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    b = (CLIENT_ID, CLIENT_SECRET)
    with auth_daemon() as d:
        issued = []
        # refresh_token grant: the same refresh token echoed (not rotated)
        for i in range(2):
            issued.append(expect_token(tok(d, form={
                "grant_type": "refresh_token", "refresh_token": REFRESH},
                basic=b), "refresh %d" % i, refresh=REFRESH))
        issued.append(expect_token(tok(d, js=dict(
            creds, grant_type="refresh_token", refresh_token=REFRESH)),
            "refresh json", refresh=REFRESH))
        expect_error(tok(d, form={"grant_type": "refresh_token",
                                  "refresh_token": REFRESH + "x"}, basic=b),
                     400, "invalid_grant", "bad refresh token")
        expect_error(tok(d, form={"grant_type": "refresh_token",
                                  "refresh_token": "refresh-other"},
                         basic=b),
                     400, "invalid_grant", "other refresh token")

        # grant_type
        expect_error(tok(d, form={"scope": "webhook.read"}, basic=b),
                     400, "invalid_request", "missing grant_type")
        expect_error(tok(d, js=creds), 400, "invalid_request",
                     "missing grant_type json")
        expect_error(tok(d, form={"grant_type": "password",
                                  "username": "u", "password": "p"},
                         basic=b),
                     400, "unsupported_grant_type", "password grant")
        expect_error(tok(d, form={"grant_type": "authorization_code",
                                  "code": "abc"}, basic=b),
                     400, "unsupported_grant_type", "code grant")

        # scopes: a subset is granted as asked, none asked -> all configured
        cc = {"grant_type": "client_credentials"}
        issued.append(expect_token(tok(d, form=dict(cc), basic=b),
                                   "no scope", scopes=SCOPES))
        issued.append(expect_token(tok(d, form=dict(cc, scope="webhook.read"),
                                       basic=b), "one scope",
                                   scopes=["webhook.read"]))
        issued.append(expect_token(tok(d, form=dict(
            cc, scope="webhook.read webhook.write"), basic=b),
            "two scopes", scopes=SCOPES))
        issued.append(expect_token(tok(d, js=dict(
            cc, scopes=["webhook.write"]), basic=b),
            "json scopes array", scopes=["webhook.write"]))
        expect_error(tok(d, form=dict(cc, scope="webhook.read webhook.admin"),
                         basic=b), 400, "invalid_scope", "excess scope")
        expect_error(tok(d, js=dict(cc, scopes=["webhook.delete"]), basic=b),
                     400, "invalid_scope", "excess scopes array")
        expect_error(tok(d, form={"grant_type": "refresh_token",
                                  "refresh_token": REFRESH,
                                  "scope": "admin"}, basic=b),
                     400, "invalid_scope", "excess scope on refresh")

        # other methods: 405 with Allow: POST
        for method in ("GET", "PUT", "DELETE"):
            st, h, body = d.request(method, TOKEN_PATH,
                                    None if method == "GET" else b"{}")
            assert st == 405, (method, st, body[:200])
            allow = {m.strip().upper() for m in h.get("allow", "").split(",")}
            assert allow == {"POST"}, (method, h)

        assert len(set(issued)) == len(issued)
        assert_no_secrets(d, config_secrets() + issued)


def test_token_endpoint_throttles_wrong_secrets():
    other = ('{ id = "other", secret = "other-secret-55",'
             ' scopes = { "webhook.write" } }')
    cc = {"grant_type": "client_credentials"}
    with auth_daemon(more_clients=other) as d:
        t0 = time.time()
        for i in range(5):
            expect_error(tok(d, form=cc, basic=(CLIENT_ID, "bad-%d" % i)),
                         401, "invalid_client", "wrong secret %d" % i,
                         basic=True)
        for i in range(2):
            st, h, body = tok(d, form=dict(cc, client_id=CLIENT_ID,
                                           client_secret="bad-more-%d" % i))
            assert st == 429, ("wrong secret after 5", st, body[:300])
            assert_no_cache(h, "429")
            ra = h.get("retry-after", "")
            assert ra.isdigit() and 0 < int(ra) <= 60, ("Retry-After", h)
            assert "access_token" not in json_of(body), body
        assert time.time() - t0 < 60
        # the right secret still gets a token, by Basic and in the body
        t1 = expect_token(tok(d, form=cc, basic=(CLIENT_ID, CLIENT_SECRET)),
                          "right secret while throttled (basic)")
        t2 = expect_token(tok(d, form=dict(cc, client_id=CLIENT_ID,
                                           client_secret=CLIENT_SECRET)),
                          "right secret while throttled (body)")
        # still throttled for wrong ones
        st, h, _ = tok(d, form=cc, basic=(CLIENT_ID, "bad-again"))
        assert st == 429 and h.get("retry-after"), (st, h)
        # throttling is per client id
        expect_error(tok(d, form=cc, basic=("other", "nope")),
                     401, "invalid_client", "other client, wrong secret",
                     basic=True)
        expect_token(tok(d, form=cc, basic=("other", "other-secret-55")),
                     "other client", scopes=["webhook.write"])
        assert_no_secrets(d, config_secrets() + [t1, t2, "other-secret-55"])



def oauth_clients(clients):
    """An oauth2 table with these clients (Lua source, one per entry)."""
    return ('oauth2 = { path = "%s", token_ttl = 3600, clients = {\n  %s } },'
            % (TOKEN_PATH, ",\n  ".join(clients)))


def client_lua(cid, secret, scopes, refresh=None):
    return ('{ id = %s, secret = %s,%s scopes = { %s } }'
            % (lua_str(cid), lua_str(secret),
               " refresh_token = %s," % lua_str(refresh) if refresh else "",
               ", ".join(lua_str(s) for s in scopes)))


def reconfigure(d, clients, reloads):
    """Rewrite the config with these oauth2 clients, SIGHUP, and wait for
    reload number `reloads` to be applied."""
    d.write("walua.conf.lua", d.config_text(endpoints(), 1, "debug",
                                            oauth_clients(clients)))
    d.signal(signal.SIGHUP)
    d.wait_log(lambda l: l.get("msg") == "reload ok", count=reloads)
    assert not d.find(lambda l: l.get("msg") == "reload failed"), \
        d.log_text()[-2000:]


OTHER_SECRET = "other-secret-9f2c"
OTHER = client_lua("other", OTHER_SECRET, ["webhook.write"])
NEW_SECRET = "s3:cr+t/rotated-71"
CC = {"grant_type": "client_credentials"}


def other_client(d):
    return InsiderClient(d, "other", OTHER_SECRET, token_path=TOKEN_PATH,
                         endpoint=OAUTH_EP)


def refused_everywhere(d, refused, o, accepted, when):
    """Each (what, token) in refused is a 401 and stored nothing: the
    other client's marker shows exactly `accepted` deliveries handled."""
    for what, t in refused:
        assert_invalid_token(d.post(OAUTH_EP, text_body(
            "must not arrive", new_id("BD")), token=t), what + when)
    lines = settle(d, o)
    assert len(lines) == accepted and not [
        l for l in lines if l.get("text") == "must not arrive"], \
        (accepted, lines)


def assert_no_secret_in_db(d, secrets):
    _, dump = db_dump(d)
    for s in secrets:
        assert s not in dump, "a client secret is in the database"


def test_tokens_refused_once_their_client_is_removed():
    with auth_daemon(more_clients=OTHER) as d:
        o = other_client(d)
        b = (CLIENT_ID, CLIENT_SECRET)
        # t1 is used (so it may be cached); t2 is only in the database
        t1 = expect_token(tok(d, form=CC, basic=b), "t1")
        t2 = expect_token(tok(d, form={"grant_type": "refresh_token",
                                       "refresh_token": REFRESH}, basic=b),
                          "t2", refresh=REFRESH)
        assert_acked(d.post(OAUTH_EP, text_body("t1", new_id("RM")),
                            token=t1), what="t1 before")
        assert_acked(o.deliver(text_body("other", new_id("RM"))))

        reconfigure(d, [OTHER], 1)
        refused = [("t1 of a removed client", t1),
                   ("t2 of a removed client", t2)]
        refused_everywhere(d, refused, o, 2, "")
        for what, grant in (("client_credentials", CC),
                            ("refresh_token", {"grant_type": "refresh_token",
                                               "refresh_token": REFRESH})):
            expect_error(tok(d, form=grant, basic=b), 401, "invalid_client",
                         what + " of a removed client", basic=True)
        assert acked_total(d) == 2 + 1, "refused deliveries were stored"

        assert d.stop() == 0
        d.restart()
        refused_everywhere(d, refused, o, 2, ", after a restart")
        assert_no_secret_in_db(d, [CLIENT_SECRET, OTHER_SECRET, REFRESH])
        assert_no_secrets(d, config_secrets() + [OTHER_SECRET, t1, t2] +
                          o.issued)


def test_tokens_refused_once_their_client_secret_changes():
    with auth_daemon(more_clients=OTHER) as d:
        o = other_client(d)
        b = (CLIENT_ID, CLIENT_SECRET)
        t1 = expect_token(tok(d, form=CC, basic=b), "t1")
        t2 = expect_token(tok(d, form=CC, basic=b), "t2")
        assert_acked(d.post(OAUTH_EP, text_body("t1", new_id("SC")),
                            token=t1), what="t1 before")
        assert_acked(o.deliver(text_body("other", new_id("SC"))))

        reconfigure(d, [client_lua(CLIENT_ID, NEW_SECRET, SCOPES, REFRESH),
                        OTHER], 1)
        refused = [("t1 after the secret changed", t1),
                   ("t2 after the secret changed", t2)]
        refused_everywhere(d, refused, o, 2, "")
        expect_error(tok(d, form=CC, basic=b), 401, "invalid_client",
                     "old secret", basic=True)
        nb = (CLIENT_ID, NEW_SECRET)
        t3 = expect_token(tok(d, form=CC, basic=nb), "t3")
        assert_acked(d.post(OAUTH_EP, text_body("t3", new_id("SC")),
                            token=t3), what="a token of the new secret")
        assert acked_total(d) == 3 + 1, "refused deliveries were stored"

        assert d.stop() == 0
        d.restart()
        refused_everywhere(d, refused, o, 3, ", after a restart")
        assert_acked(d.post(OAUTH_EP, text_body("t3", new_id("SC")),
                            token=t3), what="t3 after a restart")
        assert_no_secret_in_db(d, [CLIENT_SECRET, NEW_SECRET, OTHER_SECRET])
        assert_no_secrets(d, config_secrets() + [NEW_SECRET, OTHER_SECRET,
                                                 t1, t2, t3] + o.issued)


def test_tokens_refused_once_a_scope_they_carry_is_removed():
    with auth_daemon(more_clients=OTHER) as d:
        o = other_client(d)
        b = (CLIENT_ID, CLIENT_SECRET)
        tw = expect_token(tok(d, form=dict(CC, scope="webhook.write"),
                              basic=b), "tw", scopes=["webhook.write"])
        tr = expect_token(tok(d, form=dict(CC, scope="webhook.read"),
                              basic=b), "tr", scopes=["webhook.read"])
        ta = expect_token(tok(d, form=CC, basic=b), "ta")   # both scopes
        for t in (tw, tr, ta):
            assert_acked(d.post(OAUTH_EP, text_body("scoped", new_id("SP")),
                                token=t), what="before")

        reconfigure(d, [client_lua(CLIENT_ID, CLIENT_SECRET,
                                   ["webhook.write"], REFRESH), OTHER], 1)
        assert_acked(d.post(OAUTH_EP, text_body("tw", new_id("SP")),
                            token=tw), what="tw: its scope is still granted")
        refused_everywhere(d, [("tr: its scope was removed", tr),
                               ("ta: one of its scopes was removed", ta)],
                           o, 4, "")
        assert acked_total(d) == 4 + 1, "refused deliveries were stored"
        assert_no_secrets(d, config_secrets() + [OTHER_SECRET, tw, tr, ta] +
                          o.issued)


@sqlite_only
def test_tokens_of_an_older_database_are_bound_on_first_use():
    """A database written before tokens carried a secret fingerprint
    (schema version 1): it opens, its tokens work until the client's
    secret changes, and tokens of clients no longer configured do not."""
    d = auth_daemon(more_clients=OTHER)
    legacy, gone = "a1" * 32, "b2" * 32
    exp = int(time.time() * 1000) + 3600 * 1000
    con = sqlite3.connect(os.path.join(d.dir, "walua.db"))
    con.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;"
        "CREATE TABLE oauth_tokens (hash TEXT PRIMARY KEY,"
        "  client_id TEXT NOT NULL, scope TEXT, expires_ms INTEGER NOT NULL)"
        "  WITHOUT ROWID;"
        "INSERT INTO meta VALUES ('schema_version', '1');")
    con.executemany("INSERT INTO oauth_tokens VALUES (?, ?, ?, ?)", [
        (hashlib.sha256(legacy.encode()).hexdigest(), CLIENT_ID,
         " ".join(SCOPES), exp),
        (hashlib.sha256(gone.encode()).hexdigest(), "removed-client",
         "webhook.write", exp)])
    con.commit()
    con.close()
    with d:
        o = other_client(d)
        assert_acked(d.post(OAUTH_EP, text_body("legacy", new_id("LG")),
                            token=legacy), what="a token of version 1")
        refused = [("a version 1 token of a client no longer configured",
                    gone)]
        refused_everywhere(d, refused, o, 1, "")
        con = sqlite3.connect(os.path.join(d.dir, "walua.db"), timeout=5)
        try:
            ver = con.execute("SELECT value FROM meta WHERE key ="
                              " 'schema_version'").fetchone()[0]
            fps = dict(con.execute("SELECT client_id, secret_fp"
                                   " FROM oauth_tokens").fetchall())
        finally:
            con.close()
        assert int(ver) >= 2, ver
        assert HEX64.match(fps[CLIENT_ID] or ""), fps
        assert fps["removed-client"] is None, fps

        reconfigure(d, [client_lua(CLIENT_ID, NEW_SECRET, SCOPES, REFRESH),
                        OTHER], 1)
        refused.append(("a version 1 token after the secret changed",
                        legacy))
        refused_everywhere(d, refused, o, 1, "")
        assert_no_secret_in_db(d, [CLIENT_SECRET, NEW_SECRET, OTHER_SECRET])


def test_throttle_survives_a_flood_of_made_up_client_ids():
    cc = {"grant_type": "client_credentials"}
    with auth_daemon() as d:
        for i in range(5):
            expect_error(tok(d, form=cc, basic=(CLIENT_ID, "bad-%d" % i)),
                         401, "invalid_client", "wrong secret %d" % i,
                         basic=True)
        st, h, _ = tok(d, form=cc, basic=(CLIENT_ID, "bad-5"))
        assert st == 429 and h.get("retry-after"), (st, h)
        # 1,100 strangers, one request each (as many as fit in the window)
        t0 = time.time()
        codes = {}
        for i in range(1100):
            st, _, body = tok(d, form=dict(cc, client_id="made-up-%d" % i,
                                           client_secret="x"))
            assert st in (401, 429) and \
                json_of(body).get("error") == "invalid_client", (i, st, body)
            codes[st] = codes.get(st, 0) + 1
        print("1,100 made-up client ids in %.1fs: %r" % (time.time() - t0,
                                                          codes))
        assert time.time() - t0 < 50, "too slow to stay in the window"
        # the real client is still throttled for wrong secrets ...
        st, h, body = tok(d, form=cc, basic=(CLIENT_ID, "bad-after-flood"))
        assert st == 429, ("wrong secret after the flood: expected 429, got"
                           " %d %r" % (st, body[:200]))
        ra = h.get("retry-after", "")
        assert ra.isdigit() and 0 < int(ra) <= 60, ("Retry-After", h)
        # ... and the right secret still gets a token, as before the flood
        t = expect_token(tok(d, form=cc, basic=(CLIENT_ID, CLIENT_SECRET)),
                         "right secret while throttled")
        assert_acked(d.post(OAUTH_EP, text_body("after flood", new_id("FL")),
                            token=t))
        # made-up ids are throttled as one group
        assert codes.get(429, 0) >= 1100 - 5, codes
        assert_no_secrets(d, config_secrets() + [t])


# 3. signatures -------------------------------------------------------------
# odd whitespace (tabs, CRLF, spaces between tokens) and non-ASCII text: the
# HMAC is over these exact bytes; a re-encoded body would not match
KAPSO_RAW = (
    '{\n\t"message" :\t{ "id" : "%s" ,\n'
    '   "timestamp":"1730092800",\t"type":   "text",\n'
    '   "text" : {"body":"%s"},\r\n'
    '   "kapso":{"direction":"inbound","status":"received",'
    '"origin":"cloud_api"}},\n'
    '  "conversation" : {"id":"conv_sig_1", "phone_number":"+905321234567",'
    '   "status":"active", "phone_number_id":"123456789012345"},\n'
    '\t"is_new_conversation" : false ,  "phone_number_id" : '
    '"123456789012345"\n}\n')


def one_byte_changes(body, anchor):
    """Variants of body with one byte changed: the tab after the first '{'
    and newline, a byte of the message id, the last byte of anchor."""
    out = []
    i = body.index(b"\t")
    out.append(("whitespace byte", body[:i] + b" " + body[i + 1:]))
    j = body.index(b"AUTH")
    out.append(("message id byte", body[:j] + b"B" + body[j + 1:]))
    k = body.index(anchor) + len(anchor) - 1
    out.append(("text byte", body[:k] + bytes([body[k] ^ 1]) + body[k + 1:]))
    for _, v in out:
        assert len(v) == len(body) and v != body
    return out


def test_kapso_signature_over_raw_bytes():
    with auth_daemon() as d:
        c = client(d)
        m1 = new_id("K")
        body = (KAPSO_RAW % (m1, NON_ASCII)).encode("utf-8")
        json.loads(body)
        good = sign(KAPSO_SECRET, body)
        key = str(uuid.uuid4())

        # refusals first (the first one with the key the good one will use)
        assert_401(kapso_post(d, body, sig=False, key=key), "missing header")
        assert_401(kapso_post(d, body, sig=""), "empty header")
        assert_401(kapso_post(d, body, secret="kapso-other-secret"),
                   "wrong secret")
        assert_401(kapso_post(d, body, sig=good[:-1]), "truncated signature")
        assert_401(kapso_post(d, body, sig=sign(KAPSO_SECRET, body + b" ")),
                   "signature of another body")
        assert_401(kapso_post(d, body, sig="sha1=" + hashlib.sha1(
            body).hexdigest()), "sha1")
        for what, v in one_byte_changes(body, NON_ASCII.encode()):
            assert_401(kapso_post(d, v, sig=good), what)
        assert settle(d, c) == [], "a refused Kapso body reached Lua"

        # the good one (its idempotency key was seen only on a refusal)
        assert_acked(kapso_post(d, body, sig=good, key=key), what="kapso raw")
        # tolerated forms: sha256= prefix, upper-case hex, both
        texts = {m1: NON_ASCII}
        for what, fmt in (("prefix", "sha256=%s"),
                          ("upper", None), ("prefix+upper", "sha256=%s")):
            m = new_id("K")
            t = "%s \t%s\n  ✓" % (NON_ASCII, what)
            b = kapso_body(t, m)
            s = sign(KAPSO_SECRET, b)
            if what != "prefix":
                s = s.upper()
            if fmt:
                s = fmt % s
            assert_acked(kapso_post(d, b, sig=s), what=what)
            texts[m] = t
        got = {l["message_id"]: l["text"] for l in settle(d, c)}
        assert got == texts, got
        assert all(l["provider"] == "kapso" and l["endpoint"] == KAPSO_EP
                   for l in handled(d))
        assert acked_total(d) == 2 + 4, "refused bodies were stored"
        assert_no_secrets(d, config_secrets(c))


def test_meta_signature_over_raw_bytes():
    with auth_daemon() as d:
        c = client(d)
        m1 = new_id("M")
        text = NON_ASCII + "\n\tikinci satır"
        raw = meta_body(text, m1)
        # odd whitespace between tokens, still the same JSON
        body = raw.replace(b'", "', b'",\n\t  "').replace(b": ", b" :\t")
        assert json.loads(body) == json.loads(raw) and body != raw
        good = "sha256=" + sign(META_SECRET, body)

        assert_401(meta_post(d, body, sig=False), "missing header")
        assert_401(meta_post(d, body, sig=good[len("sha256="):]),
                   "hex without the sha256= prefix")
        assert_401(meta_post(d, body, sig="sha256="), "empty hex")
        assert_401(meta_post(d, body, secret="meta-other-secret"),
                   "wrong secret")
        assert_401(meta_post(d, body, sig="sha1=" + hashlib.sha1(
            body).hexdigest()), "sha1")
        # the Kapso header is not the Meta one
        assert_401(d.request("POST", META_EP, body, {
            "Content-Type": "application/json",
            "X-Webhook-Signature": sign(META_SECRET, body)}),
            "kapso header on meta")
        for what, v in one_byte_changes(body, NON_ASCII.encode()):
            assert_401(meta_post(d, v, sig=good), what)
        assert settle(d, c) == [], "a refused Meta body reached Lua"

        assert_acked(meta_post(d, body, sig=good), what="meta raw")
        # Meta's own form: non-ASCII escaped as \\uXXXX, signed as sent
        m2 = new_id("M")
        esc = meta_body(text, m2, ensure_ascii=True)
        assert b"\\u" in esc
        assert_acked(meta_post(d, esc), what="meta escaped")
        got = {l["message_id"]: l["text"] for l in settle(d, c)}
        assert got == {m1: text, m2: text}, got
        assert acked_total(d) == 2 + 2, "refused bodies were stored"
        assert_no_secrets(d, config_secrets(c))


def test_published_hmac_vector_authenticates():
    # the helper agrees with GitHub's published example
    assert hmac.new(GH_SECRET.encode(), GH_BODY,
                    hashlib.sha256).hexdigest() == GH_SIG
    assert sign(GH_SECRET, GH_BODY) == GH_SIG
    eps = endpoints(kapso_secret=GH_SECRET, meta_secret=GH_SECRET)
    with auth_daemon(endpoints=eps) as d:
        c = client(d)

        def not_json(ans, what):
            st, _, body = ans
            # 400, not 401: the signature passed, then the body was refused
            assert st == 400, "%s: expected 400, got %d %r" % (
                what, st, body[:300])
            j = json_of(body)
            assert j.get("ok") is False and \
                "not valid JSON" in j.get("error", ""), (what, j)

        not_json(meta_post(d, GH_BODY, sig="sha256=" + GH_SIG), "meta")
        not_json(kapso_post(d, GH_BODY, sig=GH_SIG), "kapso")
        not_json(kapso_post(d, GH_BODY, sig="sha256=" + GH_SIG), "kapso pfx")
        # and with a wrong signature, the same body is a 401
        wrong = GH_SIG[:-1] + ("0" if GH_SIG[-1] != "0" else "1")
        assert_401(meta_post(d, GH_BODY, sig="sha256=" + wrong), "meta wrong")
        assert_401(kapso_post(d, GH_BODY, sig=wrong), "kapso wrong")
        assert_401(kapso_post(d, GH_BODY, secret=KAPSO_SECRET),
                   "kapso other secret")
        assert settle(d, c) == []
        assert acked_total(d) == 1
        assert_no_secrets(d, [GH_SECRET, GH_SIG, wrong, CLIENT_SECRET,
                              REFRESH] + c.issued)


# 4. Meta handshake -----------------------------------------------------------
def test_meta_handshake():
    with auth_daemon() as d:
        c = client(d)
        for challenge in ("1158201444", "abc-XYZ_123.~"):
            st, h, body = handshake(d, **{"hub.mode": "subscribe",
                                          "hub.verify_token": VERIFY_TOKEN,
                                          "hub.challenge": challenge})
            assert st == 200, (st, body[:300])
            assert h.get("content-type", "").startswith("text/plain"), h
            assert body == challenge.encode(), body
        # parameters in another order
        q = ("hub.challenge=42&hub.verify_token=%s&hub.mode=subscribe"
             % urllib.parse.quote(VERIFY_TOKEN, safe=""))
        st, _, body = d.request("GET", META_EP + "?" + q)
        assert (st, body) == (200, b"42"), (st, body)

        ok = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
              "hub.challenge": "777"}
        bad = [
            ("wrong token", dict(ok, **{"hub.verify_token": "nope"})),
            ("token prefix", dict(ok, **{"hub.verify_token":
                                         VERIFY_TOKEN[:-1]})),
            ("token + 1", dict(ok, **{"hub.verify_token":
                                      VERIFY_TOKEN + "x"})),
            ("empty token", dict(ok, **{"hub.verify_token": ""})),
            ("app secret as token", dict(ok, **{"hub.verify_token":
                                                META_SECRET})),
            ("no token", {k: v for k, v in ok.items()
                          if k != "hub.verify_token"}),
            ("no challenge", {k: v for k, v in ok.items()
                              if k != "hub.challenge"}),
            ("no mode", {k: v for k, v in ok.items() if k != "hub.mode"}),
            ("no hub.* at all", {}),
        ]
        for what, params in bad:
            st, _, body = handshake(d, **params)
            assert st == 403, "%s: expected 403, got %d %r" % (
                what, st, body[:300])
            assert b"777" not in body, (what, body)
        assert settle(d, c) == []
        assert_no_secrets(d, config_secrets(c))


# 5. Kapso idempotency and batches ------------------------------------------
def test_kapso_idempotency_key_and_batch():
    with auth_daemon() as d:
        c = client(d)
        key = str(uuid.uuid4())
        m1, m2 = new_id("I"), new_id("I")
        assert_acked(kapso_post(d, kapso_body("first", m1), key=key))
        # same key, another (properly signed) body: a duplicate
        assert_acked(kapso_post(d, kapso_body("second", m2), key=key),
                     events=0, duplicates=1, what="same key, other body")
        assert_acked(kapso_post(d, kapso_body("first", m1), key=key),
                     events=0, duplicates=1, what="same key, same body")

        # a batch of 3
        ms = [new_id("B") for _ in range(3)]
        batch = {"type": "whatsapp.message.received", "batch": True,
                 "data": [kapso_message("batch %d" % i, m, conv="conv_b")
                          for i, m in enumerate(ms)],
                 "batch_info": {"size": 3, "window_ms": 5000,
                                "first_sequence": 101, "last_sequence": 103,
                                "conversation_id": "conv_b"}}
        assert_acked(kapso_post(d, json.dumps(batch).encode(),
                                headers={"X-Webhook-Batch": "true",
                                         "X-Batch-Size": "3"}),
                     events=3, what="batch")
        got = [(l["message_id"], l["text"]) for l in settle(d, c)]
        assert sorted(got) == sorted([(m1, "first")] + [
            (m, "batch %d" % i) for i, m in enumerate(ms)]), got
        assert m2 not in [g[0] for g in got]
        assert_no_secrets(d, config_secrets(c))


# 6. secret scan ----------------------------------------------------------------
def test_no_secret_in_debug_log_or_metrics():
    with auth_daemon(log_level="debug") as d:
        c = client(d)
        b = (CLIENT_ID, CLIENT_SECRET)
        cc = {"grant_type": "client_credentials"}
        issued = []
        # token requests, good and bad
        for ans in (tok(d, form=cc, basic=b),
                    tok(d, js=dict(cc, client_id=CLIENT_ID,
                                   client_secret=CLIENT_SECRET)),
                    tok(d, form={"grant_type": "refresh_token",
                                 "refresh_token": REFRESH}, basic=b)):
            issued.append(json_of(ans[2])["access_token"])
        bad_refresh = "refresh-not-the-right-one"
        tok(d, form={"grant_type": "refresh_token",
                     "refresh_token": bad_refresh}, basic=b)
        tok(d, form=cc, basic=(CLIENT_ID, CLIENT_SECRET + "x"))
        tok(d, form=dict(cc, client_id=CLIENT_ID,
                         client_secret=CLIENT_SECRET[:-1]))
        tok(d, form=dict(cc, client_id=CLIENT_ID, client_secret=CLIENT_SECRET),
            basic=b)
        tok(d, form={"grant_type": "password"}, basic=b)
        tok(d, form=dict(cc, scope="admin"), basic=b)
        issued.append(json_of(tok(d, form=cc, basic=b)[2])["access_token"])

        # oauth2 deliveries: good, a refresh, bad
        for i in range(2):
            assert_acked(c.deliver(text_body("scan %d" % i, new_id("S"))))
        c.fetch_token("refresh_token")
        assert_acked(c.deliver(text_body("scan 2", new_id("S"))))
        oauth_refusals = 0
        for t in ("f" * 64, issued[0][:-1], REFRESH):
            assert_invalid_token(d.post(OAUTH_EP, text_body(
                "no", new_id("S")), token=t))
            oauth_refusals += 1
        assert_invalid_token(d.request("POST", OAUTH_EP, b'{"a":1}', {
            "Authorization": basic_header(CLIENT_ID, CLIENT_SECRET)}))
        oauth_refusals += 1

        # kapso: good, and signature failures
        kb = kapso_body(NON_ASCII, new_id("S"))
        assert_acked(kapso_post(d, kb))
        kb2 = kapso_body("upper", new_id("S"))
        assert_acked(kapso_post(d, kb2, sig="sha256=" + sign(
            KAPSO_SECRET, kb2).upper()))
        kapso_refusals = 0
        for sig in (sign(KAPSO_SECRET, kb + b" "), sign("wrong", kb), False,
                    "zz" * 32):
            assert_401(kapso_post(d, kb, sig=sig))
            kapso_refusals += 1
        # meta: handshake good and bad, deliveries good and bad
        st, _, _ = handshake(d, **{"hub.mode": "subscribe",
                                   "hub.verify_token": VERIFY_TOKEN,
                                   "hub.challenge": "31337"})
        assert st == 200
        st, _, _ = handshake(d, **{"hub.mode": "subscribe",
                                   "hub.verify_token": VERIFY_TOKEN + "-x",
                                   "hub.challenge": "31337"})
        assert st == 403
        mb = meta_body(NON_ASCII, new_id("S"))
        assert_acked(meta_post(d, mb))
        meta_refusals = 0
        for sig in ("sha256=" + sign("wrong", mb), sign(META_SECRET, mb),
                    "sha256=" + sign(META_SECRET, mb + b"\n"), False):
            assert_401(meta_post(d, mb, sig=sig))
            meta_refusals += 1

        settle(d, c)
        issued += c.issued
        secrets = config_secrets(c) + issued + [bad_refresh,
                                                CLIENT_SECRET + "x",
                                                CLIENT_SECRET[:-1],
                                                VERIFY_TOKEN + "-x"]
        # a debug log that did say something about all of this
        assert d.find(lambda l: l.get("level") == "debug") or \
            len(d.logs()) > 20
        assert_no_secrets(d, secrets)

        text = metrics_text(d)
        leaked = leaked_in(text, secrets)
        assert not leaked, "secrets in /metrics: %r" % leaked[:5]
        ms = parse_metrics(text)
        assert "walua_oauth_tokens_issued_total" in text, \
            "no walua_oauth_tokens_issued_total"
        n_issued = metric_sum(ms, "walua_oauth_tokens_issued_total")
        assert n_issued == len(set(issued)), (n_issued, len(set(issued)))
        for ep, n in ((OAUTH_EP, oauth_refusals), (KAPSO_EP, kapso_refusals),
                      (META_EP, meta_refusals)):
            samples = {ls: v for (name, ls), v in ms.items()
                       if name == "walua_auth_failures_total"
                       and ("endpoint", ep) in ls}
            assert samples, "no walua_auth_failures_total{endpoint=%s}" % ep
            assert all(dict(ls).get("reason") for ls in samples), samples
            assert sum(samples.values()) == n, (ep, n, samples)
