#!/usr/bin/env python3
"""fake_insider.py - a strict fake of Insider One's outbound APIs (v1 and
the v2 gateway) for walua's tests.  Python 3 standard library only.

    from fake_insider import FakeInsider
    with FakeInsider(phones=["15551234567"]) as srv:
        ... point insider.api_url at srv.api_url and insider.gateway_url at
        srv.gateway_url (both equal srv.url unless separate_gateway=True) ...
        assert srv.requests[-1]["status"] == 200

Standalone:  python3 tests/fakes/fake_insider.py --port 0 --seconds 60
prints "listening http://127.0.0.1:PORT" and serves until the time is up.

The fake refuses what the real API documents as invalid (wrong casing,
missing fields, bad values) and also a few things the real API would accept
but store as garbage (a masked secret sent back, unknown keys), so that a
binding bug shows up in tests.  See tests/fakes/README.md.

This module also holds FakeServer, the generic recording HTTP server that
fake_kapso.py and fake_meta.py build on.
"""
import argparse
import json
import re
import secrets
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FakeServer", "FakeInsider", "Reply", "mask_secret",
           "DEFAULT_AUTH_KEY", "DEFAULT_CLIENT_ID", "DEFAULT_CLIENT_SECRET",
           "DEFAULT_PHONE", "WEBHOOK_SCOPES"]


# ---------------------------------------------------------------------------
# generic recording server
# ---------------------------------------------------------------------------

class Reply(Exception):
    """Raise (or return) to answer a request: status, JSON body (None: no
    body), extra headers.  raw (bytes) is sent as it is instead of a JSON
    body; give its Content-Type in headers."""

    def __init__(self, status, body=None, headers=None, raw=None):
        Exception.__init__(self, status, body)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.raw = raw


def utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive, Expect: 100-continue
    # the head and the body go out in two writes: with Nagle on, the body
    # waits for the client's delayed ACK (40 ms) on a kept-alive connection
    disable_nagle_algorithm = True
    server_version = "fake"
    sys_version = ""

    def setup(self):
        BaseHTTPRequestHandler.setup(self)
        self.server.fake._track(self.connection, True)

    def finish(self):
        try:
            BaseHTTPRequestHandler.finish(self)
        finally:
            self.server.fake._track(self.connection, False)

    def log_message(self, fmt, *args):
        if self.server.fake.verbose:
            sys.stderr.write("fake %s: %s\n" % (self.server.role, fmt % args))

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n",
                                                             b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _serve(self):
        fake = self.server.fake
        body = self._read_body()
        split = urllib.parse.urlsplit(self.path)
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        try:
            parsed = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        req = {
            "method": self.command,
            "path": urllib.parse.unquote(split.path),
            "query": urllib.parse.parse_qs(split.query,
                                           keep_blank_values=True),
            "headers": headers,
            "body": body,
            "json": parsed,
            "status": None,
            "host": self.server.role,
            "time": time.time(),
        }
        with fake.lock:
            fake.requests.append(req)
            fake.cond.notify_all()
        reply = fake._dispatch(req)
        if reply is None:               # hang: close without answering
            self.close_connection = True
            return
        with fake.lock:
            req["status"] = reply.status
            fake.cond.notify_all()
        data = b""
        if reply.raw is not None:
            data = reply.raw
        elif reply.body is not None:
            data = json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            if data and reply.raw is None:
                self.send_header("Content-Type",
                                 "application/json; charset=utf-8")
            for k, v in reply.headers.items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data and self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve
    do_OPTIONS = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def handle_error(self, request, client_address):
        # a client that goes away (walua killed with -9 by a test) is not
        # the fake's error; anything else is printed as usual
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        ThreadingHTTPServer.handle_error(self, request, client_address)


class FakeServer:
    """A recording JSON HTTP server on 127.0.0.1 with test knobs.  Subclasses
    implement handle(req) -> Reply (return it or raise it).

    Knobs, checked in this order for every request before handle():
      hang (bool)        hold the request open without answering, up to
                         hang_seconds (30) or until stop(), then close it
      maintenance (bool) answer 503 maintenance_body()
      fail_nth(nth, status, body, path=None, method=None, headers=None)
                         the nth request from now whose path starts with
                         `path` (and whose method is `method`) gets this
                         answer; the ones before it are served as usual
      fail_next(status, body, n=1, headers=None, path=None)
                         the next n requests (whose path starts with `path`
                         when given) get this answer
      throttle(n, retry_after=1, path=None)
                         the next n requests answer 429 throttle_body(),
                         with Retry-After unless retry_after is None
    """

    roles = ("main",)

    def __init__(self, host="127.0.0.1", port=0, verbose=False):
        self.host = host
        self.port = port
        self.verbose = verbose
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.requests = []
        self.hang = False
        self.hang_seconds = 30.0
        self.maintenance = False
        self._throttle = []             # [remaining, retry_after, path]
        self._fail = []                 # [remaining, Reply, path]
        self._fail_nth = []             # [countdown, Reply, path, method]
        self._stopping = threading.Event()
        self._servers = {}
        self._threads = []
        self._conns = set()
        self.started = False

    # -- lifecycle ----------------------------------------------------------
    def start(self):
        if self.started:
            return self
        self._stopping.clear()
        for i, role in enumerate(self.roles):
            srv = _Server((self.host, self.port if i == 0 else 0), _Handler)
            srv.fake = self
            srv.role = role
            self._servers[role] = srv
            t = threading.Thread(target=srv.serve_forever,
                                 kwargs={"poll_interval": 0.1},
                                 name="fake-%s-%s" % (type(self).__name__,
                                                      role), daemon=True)
            t.start()
            self._threads.append(t)
        self.started = True
        return self

    def stop(self):
        if not self.started:
            return
        self._stopping.set()
        for srv in self._servers.values():
            srv.shutdown()
            srv.server_close()
        with self.lock:
            conns = list(self._conns)
        for c in conns:                 # idle keep-alive and hung requests
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(5)
        self._threads = []
        self._servers = {}
        self.started = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def url_of(self, role):
        srv = self._servers[role]
        return "http://%s:%d" % (self.host, srv.server_address[1])

    @property
    def url(self):
        return self.url_of(self.roles[0])

    def _track(self, conn, add):
        with self.lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # -- knobs --------------------------------------------------------------
    def clear(self):
        """Forget the recorded requests (state is kept)."""
        with self.lock:
            del self.requests[:]

    def throttle(self, n, retry_after=1, path=None):
        with self.lock:
            self._throttle.append([int(n), retry_after, path])

    def fail_next(self, status, body=None, n=1, headers=None, path=None):
        with self.lock:
            self._fail.append([int(n), Reply(status, body, headers), path])

    def fail_nth(self, nth, status, body=None, path=None, method=None,
                 headers=None):
        with self.lock:
            self._fail_nth.append([int(nth), Reply(status, body, headers),
                                   path, method])

    def throttle_body(self):
        return {"message": "Too Many Requests", "status": 429}

    def maintenance_body(self):
        return {"message": "Service Unavailable"}

    def requests_to(self, path=None, method=None):
        """Recorded requests filtered by exact path and/or method."""
        with self.lock:
            return [r for r in self.requests
                    if (path is None or r["path"] == path)
                    and (method is None or r["method"] == method)]

    def wait_for(self, pred=None, timeout=5.0, count=1):
        """Wait until `count` recorded requests satisfy pred(req) and have
        been answered; return them (raises AssertionError on timeout)."""
        pred = pred or (lambda r: True)
        deadline = time.time() + timeout
        with self.cond:
            while True:
                hits = [r for r in self.requests
                        if r["status"] is not None and pred(r)]
                if len(hits) >= count:
                    return hits
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("fake: %d of %d requests after %.1fs"
                                         % (len(hits), count, timeout))
                self.cond.wait(left)

    def _take(self, queue, path):
        for item in queue:
            if item[0] > 0 and (item[2] is None or path.startswith(item[2])):
                item[0] -= 1
                if item[0] == 0:
                    queue.remove(item)
                return item
        return None

    def _count_nth(self, req):
        """Count req against every fail_nth; the answer of the one whose
        turn it is, else None."""
        hit = None
        for item in list(self._fail_nth):
            if ((item[2] is None or req["path"].startswith(item[2]))
                    and (item[3] is None or req["method"] == item[3])):
                item[0] -= 1
                if item[0] == 0:
                    self._fail_nth.remove(item)
                    hit = hit or item[1]
        return hit

    def _dispatch(self, req):
        if self.hang:
            self._stopping.wait(self.hang_seconds)
            return None
        with self.lock:
            if self.maintenance:
                return Reply(503, self.maintenance_body())
            r = self._count_nth(req)
            if r is not None:
                return Reply(r.status, r.body, r.headers, r.raw)
            item = self._take(self._fail, req["path"])
            if item is not None:
                r = item[1]
                return Reply(r.status, r.body, r.headers, r.raw)
            item = self._take(self._throttle, req["path"])
            if item is not None:
                h = {} if item[1] is None else {"Retry-After": item[1]}
                return Reply(429, self.throttle_body(), h)
            try:
                r = self.handle(req)
            except Reply as e:
                r = e
            except Exception as e:      # a bug in the fake: say so loudly
                import traceback
                traceback.print_exc()
                r = Reply(500, {"message": "fake crashed: %r" % (e,)})
            return r

    def handle(self, req):
        raise Reply(404, {"message": "Not Found"})

    # -- standalone ---------------------------------------------------------
    def dump(self):
        """JSON-able copy of requests (body as text) and state."""
        with self.lock:
            reqs = []
            for r in self.requests:
                r = dict(r)
                r["body"] = r["body"].decode("utf-8", "replace")
                reqs.append(r)
            return {"requests": reqs,
                    "state": json.loads(json.dumps(getattr(self, "state",
                                                           {}),
                                                   default=str))}


def run_standalone(fake, seconds, dump=None):
    fake.start()
    print("listening " + fake.url, flush=True)
    for role in fake.roles[1:]:
        print("%s %s" % (role, fake.url_of(role)), flush=True)
    try:
        time.sleep(max(0.0, seconds))
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        if dump:
            with open(dump, "w") as f:
                json.dump(fake.dump(), f, indent=1)


def add_common_args(ap):
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="serve this long, then stop (max 3600)")
    ap.add_argument("--dump", help="write requests and state here at exit")
    ap.add_argument("--verbose", action="store_true")


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------

URL_RE = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.I)
E164_RE = re.compile(r"^\+[1-9][0-9]{5,14}$")
MASK = "********"


def mask_secret(s):
    """Insider's list masking: first 14 characters, then 8 asterisks."""
    return s[:14] + MASK


def looks_masked(s):
    return isinstance(s, str) and (s.endswith(MASK) or "****" in s)


def is_url(v):
    return isinstance(v, str) and bool(URL_RE.match(v))


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_str_list(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


class Invalid(Exception):
    pass


def check_keys(obj, allowed, where):
    if not isinstance(obj, dict):
        raise Invalid("%s must be an object" % where)
    extra = sorted(k for k in obj if k not in allowed)
    if extra:
        raise Invalid("unknown field %s%s" % (
            "" if where == "body" else where + ".", extra[0]))


def need(obj, key, where, kind="string"):
    name = key if where == "body" else where + "." + key
    if key not in obj or obj[key] is None:
        raise Invalid("%s is required" % name)
    v = obj[key]
    ok = {"string": lambda: isinstance(v, str) and v != "",
          "url": lambda: is_url(v),
          "bool": lambda: isinstance(v, bool),
          "posint": lambda: is_int(v) and v > 0,
          "strlist": lambda: is_str_list(v),
          "object": lambda: isinstance(v, dict)}[kind]
    if not ok():
        raise Invalid("%s must be %s" % (name, {
            "string": "a non-empty string", "url": "a valid URL",
            "bool": "a boolean", "posint": "an integer greater than 0",
            "strlist": "an array of strings",
            "object": "an object"}[kind]))
    return v


# ---------------------------------------------------------------------------
# Insider One
# ---------------------------------------------------------------------------

DEFAULT_AUTH_KEY = "INS.test-auth.key-0123456789"
DEFAULT_CLIENT_ID = "walua-test-client"
DEFAULT_CLIENT_SECRET = "walua-test-client-secret"
DEFAULT_PHONE = "15551234567"
WEBHOOK_SCOPES = ("wa-webhook-read", "wa-webhook-manage",
                  "wa-webhook-update", "wa-webhook-delete")
EVENTS = ("sent", "delivered", "read", "reply", "failed")
SUB_PRODUCTS = ("transactional", "conversational")
GRANTS = ("client_credentials", "refresh_token")

UNAUTHORIZED = {"message": "unauthorized"}
SCOPE_ERR = {"message": "insufficient scope"}
V2_ONLY_OAUTH = ("V2 API only supports OAuth2 authentication. "
                 "Use V1 API for bearer token.")

WEBHOOK_TOP = ("authType", "subProduct", "webhookUrl", "events", "oauth2")
WEBHOOK_OAUTH = ("grantType", "tokenUrl", "clientId", "clientSecret",
                 "refreshToken", "scopes", "expiresIn")
SETTINGS_TOP = ("webhook_url", "from", "auth_type", "api_key", "oauth2")
SETTINGS_OAUTH = ("grant_type", "token_url", "client_id", "client_secret",
                  "refresh_token", "scopes", "expires_in")


class FakeInsider(FakeServer):
    """Insider One: v1 host (x-ins-auth-key) and gateway (Bearer tokens from
    POST /auth/token).  See the module docstring and README.md."""

    def __init__(self, auth_keys=(DEFAULT_AUTH_KEY,),
                 client_id=DEFAULT_CLIENT_ID,
                 client_secret=DEFAULT_CLIENT_SECRET,
                 scopes=WEBHOOK_SCOPES, clients=None,
                 phones=(DEFAULT_PHONE,), token_ttl=3600,
                 token_rate_limit=10, max_webhooks=10,
                 settings_scope=None, send_scope=None,
                 require_json_content_type=True, separate_gateway=False,
                 first_webhook_id=84, host="127.0.0.1", port=0,
                 verbose=False):
        FakeServer.__init__(self, host, port, verbose)
        if separate_gateway:
            self.roles = ("api", "gateway")
        self.separate_gateway = separate_gateway
        self.auth_keys = set(auth_keys)
        # client_id -> {"secret": str, "scopes": set}
        self.clients = {}
        if client_id is not None:
            self.add_client(client_id, client_secret, scopes)
        for cid, c in (clients or {}).items():
            self.add_client(cid, c["secret"], c.get("scopes", WEBHOOK_SCOPES))
        self.phones = set(str(p).lstrip("+") for p in phones)
        self.token_ttl = token_ttl
        self.token_rate_limit = token_rate_limit    # per 60 s; None: off
        self.max_webhooks = max_webhooks            # per phone; None: off
        self.settings_scope = settings_scope
        self.send_scope = send_scope
        self.require_json_content_type = require_json_content_type
        self.token_requests = 0
        self._token_times = []
        self._next_id = first_webhook_id
        self.state = {
            "settings_v1": [],      # every accepted v1 update, oldest first
            "settings_v2": {"conversational": [], "transactional": []},
            "webhooks": {},         # id -> stored record (secret in clear)
            "sent": [],             # one entry per accepted message
            "tokens": {},           # token -> {client_id, scopes, ...}
        }

    # -- configuration helpers ---------------------------------------------
    @property
    def api_url(self):
        return self.url_of(self.roles[0])

    @property
    def gateway_url(self):
        return self.url_of(self.roles[-1])

    def add_client(self, client_id, secret, scopes=WEBHOOK_SCOPES):
        with self.lock:
            self.clients[client_id] = {"secret": secret,
                                       "scopes": set(scopes)}

    def add_phone(self, phone):
        with self.lock:
            self.phones.add(str(phone).lstrip("+"))

    def revoke_tokens(self, token=None):
        """Revoke every issued token (or just `token`)."""
        with self.lock:
            for t, info in self.state["tokens"].items():
                if token is None or t == token:
                    info["revoked"] = True

    def expire_tokens(self):
        with self.lock:
            for info in self.state["tokens"].values():
                info["expires_at"] = 0

    def issued_tokens(self):
        with self.lock:
            return list(self.state["tokens"])

    def webhooks(self, phone=None, include_deleted=False):
        """Stored webhook records (clientSecret in clear), oldest first."""
        with self.lock:
            return [dict(w) for w in self.state["webhooks"].values()
                    if (phone is None or w["phoneNumber"] == str(phone))
                    and (include_deleted or not w["deleted"])]

    def settings(self, kind="conversational"):
        """Last accepted v2 settings body of that kind ("v1": last v1)."""
        with self.lock:
            lst = (self.state["settings_v1"] if kind == "v1"
                   else self.state["settings_v2"][kind])
            return lst[-1] if lst else None

    # -- dispatch -----------------------------------------------------------
    GATEWAY_PREFIXES = ("/auth/", "/api/")

    def handle(self, req):
        path, m = req["path"], req["method"]
        on_gateway = path.startswith(self.GATEWAY_PREFIXES)
        if self.separate_gateway and (req["host"] == "gateway") != on_gateway:
            raise Reply(404, {"message": "Not Found"})
        if path in ("/v1/conversational/settings/update",
                    "/v1/conversational/send", "/v1/send"):
            self._method(m, "POST")
            self._v1_auth(req)
            if path.endswith("/update"):
                return self._settings_v1(req)
            return self._send(req, "v1")
        if path == "/auth/token":
            self._method(m, "POST")
            return self._token(req)
        mm = re.match(r"^/api/wa/v2/(conversational|transactional)/settings$",
                      path)
        if mm:
            self._method(m, "POST")
            self._bearer(req, self.settings_scope)
            return self._settings_v2(req, mm.group(1))
        if path == "/api/wa/v2/conversational/messages/send":
            self._method(m, "POST")
            self._bearer(req, self.send_scope)
            return self._send(req, "v2")
        if path == "/api/wa/v2/webhooks":
            self._method(m, "GET", "POST")
            if m == "GET":
                return self._wh_list(req)
            return self._wh_create(req)
        mm = re.match(r"^/api/wa/v2/webhooks/([^/]+)$", path)
        if mm:
            self._method(m, "PUT", "DELETE")
            if m == "PUT":
                return self._wh_update(req, mm.group(1))
            return self._wh_delete(req, mm.group(1))
        raise Reply(404, {"message": "Not Found"})

    def _method(self, m, *allowed):
        if m not in allowed:
            raise Reply(405, {"message": "Method Not Allowed"},
                        {"Allow": ", ".join(allowed)})

    # -- auth ---------------------------------------------------------------
    def _v1_auth(self, req):
        if req["headers"].get("x-ins-auth-key") not in self.auth_keys:
            raise Reply(401, UNAUTHORIZED)

    def _bearer(self, req, scope):
        h = req["headers"].get("authorization", "")
        parts = h.split(None, 1)
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise Reply(401, UNAUTHORIZED)
        info = self.state["tokens"].get(parts[1].strip())
        if (info is None or info["revoked"]
                or time.time() >= info["expires_at"]):
            raise Reply(401, UNAUTHORIZED)
        info["uses"] += 1
        req["token"] = parts[1].strip()
        if scope is not None and scope not in info["scopes"]:
            raise Reply(403, SCOPE_ERR)
        return info

    def _json_body(self, req, err):
        """Parsed JSON object body, or raise Reply(400, err)."""
        if self.require_json_content_type:
            ct = req["headers"].get("content-type", "")
            if not ct.lower().split(";")[0].strip() == "application/json":
                raise Reply(400, err)
        if not isinstance(req["json"], dict):
            raise Reply(400, err)
        return req["json"]

    # -- gateway token ------------------------------------------------------
    def _token(self, req):
        self.token_requests += 1
        now = time.time()
        if self.token_rate_limit is not None:
            self._token_times = [t for t in self._token_times
                                 if now - t < 60]
            if len(self._token_times) >= self.token_rate_limit:
                raise Reply(429, self.throttle_body())
            self._token_times.append(now)
        body = self._json_body(req, {"message": "invalid request body"})
        try:
            check_keys(body, ("client_id", "client_secret", "scopes"), "body")
            cid = need(body, "client_id", "body")
            sec = need(body, "client_secret", "body")
            scopes = need(body, "scopes", "body", "strlist")
            if not scopes:
                raise Invalid("scopes must not be empty")
        except Invalid as e:
            raise Reply(400, {"message": str(e)})
        client = self.clients.get(cid)
        if client is None or client["secret"] != sec:
            raise Reply(401, UNAUTHORIZED)
        if not set(scopes) <= client["scopes"]:
            raise Reply(403, SCOPE_ERR)
        tok = secrets.token_urlsafe(32)
        self.state["tokens"][tok] = {
            "client_id": cid, "scopes": list(scopes), "issued_at": now,
            "expires_at": now + self.token_ttl, "revoked": False, "uses": 0}
        return Reply(200, {"access_token": tok, "token_type": "Bearer",
                           "expires_in": self.token_ttl})

    # -- v1 settings --------------------------------------------------------
    def _settings_v1(self, req):
        err = {"message": "failed to validate request", "errorCode": "2011"}
        body = self._json_body(req, err)
        try:
            check_keys(body, ("isActive", "webhookUrl", "url", "apiKey"),
                       "body")
            active = need(body, "isActive", "body", "bool")
            field = "webhookUrl" if "webhookUrl" in body else "url"
            url = need(body, field, "body", "url")
            key = need(body, "apiKey", "body")
            if looks_masked(key):
                raise Invalid("apiKey looks masked")
        except Invalid as e:
            raise Reply(400, dict(err, detail=str(e)))
        self.state["settings_v1"].append({
            "is_active": active, "webhook_url": url, "api_key": key,
            "url_field": field, "auth_key": req["headers"]["x-ins-auth-key"],
            "body": body, "at": utc_now()})
        return Reply(200, {"message": "Settings updated successfully"})

    # -- v2 settings --------------------------------------------------------
    def _settings_v2(self, req, kind):
        body = self._json_body(req, {"message": "request body could not be "
                                     "decoded", "errorCode": "2010"})
        try:
            check_keys(body, SETTINGS_TOP, "body")
            need(body, "webhook_url", "body", "url")
            if "from" in body:
                f = body["from"]
                if not isinstance(f, str) or (f and not E164_RE.match(f)):
                    raise Invalid("from must be an E.164 number with +")
            at = need(body, "auth_type", "body")
            if at not in ("bearer", "oauth2"):
                raise Invalid("auth_type must be bearer or oauth2")
            if at == "bearer":
                key = need(body, "api_key", "body")
                if looks_masked(key):
                    raise Invalid("api_key looks masked")
            else:
                o = need(body, "oauth2", "body", "object")
                check_keys(o, SETTINGS_OAUTH, "oauth2")
                g = need(o, "grant_type", "oauth2")
                if g not in GRANTS:
                    raise Invalid("oauth2.grant_type must be "
                                  "client_credentials or refresh_token")
                need(o, "token_url", "oauth2", "url")
                need(o, "client_id", "oauth2")
                if looks_masked(need(o, "client_secret", "oauth2")):
                    raise Invalid("oauth2.client_secret looks masked")
                if g == "refresh_token":
                    need(o, "refresh_token", "oauth2")
                if "scopes" in o and not is_str_list(o["scopes"]):
                    raise Invalid("oauth2.scopes must be an array of strings")
                need(o, "expires_in", "oauth2", "posint")
        except Invalid as e:
            raise Reply(400, {"message": str(e), "errorCode": "2011"})
        rec = dict(body)
        rec["_at"] = utc_now()
        rec["_token"] = req.get("token")
        self.state["settings_v2"][kind].append(rec)
        return Reply(200, {"message": "Settings updated successfully"})

    # -- send ---------------------------------------------------------------
    def _send(self, req, api):
        body = self._json_body(req, self._send_err(
            "could not decode request body", "2001"))
        to_key = "phoneNumber" if api == "v1" else "phone_number"
        try:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise Invalid("messages is required and must be a non-empty "
                              "array")
            frm = body.get("from")
            if frm is not None and (not isinstance(frm, str)
                                    or (frm and not E164_RE.match(frm))):
                raise Invalid("from must be an E.164 number with +")
            for i, it in enumerate(msgs):
                where = "messages[%d]" % i
                if not isinstance(it, dict):
                    raise Invalid(where + " must be an object")
                to = it.get(to_key)
                if not isinstance(to, str) or not E164_RE.match(to):
                    raise Invalid("%s.%s is required (E.164 with +)"
                                  % (where, to_key))
                msg = it.get("message")
                if not isinstance(msg, dict):
                    raise Invalid(where + ".message is required")
                t = msg.get("type")
                if not isinstance(t, str) or not t:
                    raise Invalid(where + ".message.type is required")
                if t == "text":
                    tx = msg.get("text")
                    if not (isinstance(tx, dict)
                            and isinstance(tx.get("body"), str)
                            and tx["body"]):
                        raise Invalid(where + ".message.text.body is "
                                      "required")
        except Invalid as e:
            raise Reply(400, self._send_err(str(e), "2002",
                                            "Failed to validate request."))
        if frm:
            sender = frm.lstrip("+")
        else:
            sender = sorted(self.phones)[0] if self.phones else None
        if sender is None or sender not in self.phones:
            e = self._send_err("Message could not be sent.", "2003",
                               "Message could not be sent.")
            e["detail"] = "There is no active provider."
            raise Reply(400, e)
        keys = []
        for it in msgs:
            k = "whatsapp-" + str(uuid.uuid4())
            keys.append(k)
            self.state["sent"].append({
                "api": api, "path": req["path"], "from": frm,
                "to": it[to_key], "message": it["message"], "key": k,
                "item": it})
        return Reply(200, {"keys": keys})

    @staticmethod
    def _send_err(detail, code, message="Failed to validate request."):
        return {"message": message, "error": {"message": detail,
                                              "code": code}}

    # -- v2 webhooks CRUD ---------------------------------------------------
    def _wh_common(self, req, scope):
        self._bearer(req, scope)
        phone = req["query"].get("phoneNumber", [""])[0]
        if not phone:
            raise Reply(400, {"message":
                              "phoneNumber query parameter is required"})
        if not phone.isdigit() or phone not in self.phones:
            raise Reply(404, {"message":
                              "Provider not found for the given phone "
                              "number"})
        return phone

    def _wh_find(self, phone, wid):
        w = None
        if wid.isdigit():
            w = self.state["webhooks"].get(int(wid))
        if w is None or w["deleted"] or w["phoneNumber"] != phone:
            raise Reply(404, {"message": "Webhook not found"})
        return w

    def _wh_validate(self, body, sub_product, phone, exclude_id=None):
        """Validate a create (sub_product None: read from body) or update
        body; return (sub_product, normalized fields)."""
        try:
            allowed = WEBHOOK_TOP if exclude_id is None else \
                tuple(k for k in WEBHOOK_TOP if k != "subProduct")
            if exclude_id is not None and "subProduct" in body:
                raise Invalid("subProduct cannot be changed")
            check_keys(body, allowed, "body")
            if body.get("authType") != "oauth2":
                raise Invalid(V2_ONLY_OAUTH)
            if sub_product is None:
                sub_product = need(body, "subProduct", "body")
                if sub_product not in SUB_PRODUCTS:
                    raise Invalid("subProduct must be transactional or "
                                  "conversational")
            url = need(body, "webhookUrl", "body", "url")
            events = need(body, "events", "body", "strlist")
            if not events:
                raise Invalid("events must not be empty")
            bad = [e for e in events if e not in EVENTS]
            if bad:
                raise Invalid("invalid event %s" % bad[0])
            if sub_product == "conversational" and "reply" not in events:
                raise Invalid("reply event is required for conversational "
                              "webhooks")
            o = need(body, "oauth2", "body", "object")
            check_keys(o, WEBHOOK_OAUTH, "oauth2")
            g = need(o, "grantType", "oauth2")
            if g not in GRANTS:
                raise Invalid("oauth2.grantType must be client_credentials "
                              "or refresh_token")
            need(o, "tokenUrl", "oauth2", "url")
            need(o, "clientId", "oauth2")
            sec = need(o, "clientSecret", "oauth2")
            if g == "refresh_token":
                need(o, "refreshToken", "oauth2")
            if "scopes" in o and not is_str_list(o["scopes"]):
                raise Invalid("oauth2.scopes must be an array of strings")
            need(o, "expiresIn", "oauth2", "posint")
        except Invalid as e:
            raise Reply(400, {"message": str(e)})
        if looks_masked(sec):
            raise Reply(400, {"message": "clientSecret looks masked"})
        if looks_masked(o.get("refreshToken")):
            raise Reply(400, {"message": "refreshToken looks masked"})
        for w in self.state["webhooks"].values():
            if (not w["deleted"] and w["phoneNumber"] == phone
                    and w["subProduct"] == sub_product
                    and w["webhookUrl"] == url and w["id"] != exclude_id):
                raise Reply(400, {"message": "This webhook URL already "
                                  "exists for the selected API type"})
        oauth = {k: o[k] for k in WEBHOOK_OAUTH if k in o}
        return sub_product, {"webhookUrl": url, "events": list(events),
                             "authType": "oauth2", "oauth2": oauth}

    def _wh_list(self, req):
        phone = self._wh_common(req, "wa-webhook-read")
        out = []
        for w in self.state["webhooks"].values():
            if w["deleted"] or w["phoneNumber"] != phone:
                continue
            o = w["oauth2"]
            out.append({
                "id": w["id"], "subProduct": w["subProduct"],
                "webhookUrl": w["webhookUrl"], "events": list(w["events"]),
                "isActive": w["isActive"], "authType": w["authType"],
                "oauth2": {"grantType": o["grantType"],
                           "tokenUrl": o["tokenUrl"],
                           "clientId": o["clientId"],
                           "clientSecret": mask_secret(o["clientSecret"]),
                           "scopes": list(o.get("scopes") or []),
                           "expiresIn": o["expiresIn"]},
                "createdAt": w["createdAt"]})
        return Reply(200, {"webhooks": out})

    def _wh_create(self, req):
        phone = self._wh_common(req, "wa-webhook-manage")
        body = self._json_body(req, {"message": "invalid request body"})
        sp, fields = self._wh_validate(body, None, phone)
        if self.max_webhooks is not None:
            n = sum(1 for w in self.state["webhooks"].values()
                    if not w["deleted"] and w["phoneNumber"] == phone)
            if n >= self.max_webhooks:
                raise Reply(400, {"message": "Maximum number of OAuth2 "
                                  "webhooks reached"})
        wid = self._next_id
        self._next_id += 1
        now = utc_now()
        rec = {"id": wid, "phoneNumber": phone, "subProduct": sp,
               "isActive": True, "createdAt": now, "updatedAt": now,
               "deleted": False, "deletedAt": None}
        rec.update(fields)
        self.state["webhooks"][wid] = rec
        return Reply(200, {"status": True, "webhook": wid})

    def _wh_update(self, req, wid):
        phone = self._wh_common(req, "wa-webhook-update")
        w = self._wh_find(phone, wid)
        body = self._json_body(req, {"message": "invalid request body"})
        _, fields = self._wh_validate(body, w["subProduct"], phone,
                                      exclude_id=w["id"])
        w.update(fields)
        w["updatedAt"] = utc_now()
        return Reply(200, {"status": True, "webhook": w["id"]})

    def _wh_delete(self, req, wid):
        phone = self._wh_common(req, "wa-webhook-delete")
        w = self._wh_find(phone, wid)
        w["deleted"] = True
        w["isActive"] = False
        w["deletedAt"] = utc_now()
        return Reply(200, {"status": True})


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Insider One APIs")
    add_common_args(ap)
    ap.add_argument("--auth-key", action="append",
                    help="accepted x-ins-auth-key (repeatable; default %s)"
                    % DEFAULT_AUTH_KEY)
    ap.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    ap.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    ap.add_argument("--scope", action="append",
                    help="granted scope (repeatable; default the four "
                    "wa-webhook-* scopes)")
    ap.add_argument("--phone", action="append",
                    help="known sender phone, digits (repeatable; default "
                    "%s)" % DEFAULT_PHONE)
    ap.add_argument("--token-ttl", type=int, default=3600)
    ap.add_argument("--separate-gateway", action="store_true",
                    help="serve the gateway on a second port (printed on a "
                    "second line: gateway URL)")
    a = ap.parse_args(argv)
    fake = FakeInsider(auth_keys=a.auth_key or (DEFAULT_AUTH_KEY,),
                       client_id=a.client_id, client_secret=a.client_secret,
                       scopes=a.scope or WEBHOOK_SCOPES,
                       phones=a.phone or (DEFAULT_PHONE,),
                       token_ttl=a.token_ttl,
                       separate_gateway=a.separate_gateway, host=a.host,
                       port=a.port, verbose=a.verbose)
    run_standalone(fake, min(a.seconds, 3600.0), a.dump)
    return 0


if __name__ == "__main__":
    sys.exit(main())
