#!/usr/bin/env python3
"""fake_meta.py - a strict fake of Meta's Graph API for the WhatsApp Cloud
API (send messages, mark read with a typing indicator, media) for walua's
tests.  Python 3 standard library only.

    from fake_meta import FakeMeta, DEFAULT_META_TOKEN
    with FakeMeta() as meta:
        ... point meta.api_url at meta.api_url, graph_version "v21.0",
        access_token DEFAULT_META_TOKEN ...
        assert meta.sent[-1]["body"]["text"]["body"] == "hello"

Standalone:  python3 tests/fakes/fake_meta.py --port 0 --seconds 60
prints "listening http://127.0.0.1:PORT" and serves until the time is up.

This module also holds the Graph request checks and the GraphSendAPI mixin
that fake_kapso.py uses for Kapso's Meta-compatible API, so both fakes
validate bodies the same way.  See tests/fakes/README.md for what the fake
enforces and which parts are Meta's documented behaviour or our choice.
"""
import argparse
import base64
import hashlib
import os
import re
import secrets
import sys
import time
import urllib.parse

try:
    from fake_insider import (FakeServer, Reply, add_common_args,
                              run_standalone)
except ImportError:                     # imported by path / from elsewhere
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fake_insider import (FakeServer, Reply, add_common_args,
                              run_standalone)

__all__ = ["FakeMeta", "GraphSendAPI", "GraphError", "graph_error",
           "validate_graph_body", "new_wamid", "ERROR_CODES",
           "MESSAGE_TYPES", "DEFAULT_META_TOKEN", "DEFAULT_PHONE_NUMBER_ID",
           "DEFAULT_VERSION"]

DEFAULT_META_TOKEN = "EAAtest-meta-access-token-0123456789"
DEFAULT_PHONE_NUMBER_ID = "106540352242922"
DEFAULT_VERSION = "v21.0"

VERSION_RE = re.compile(r"^v[0-9]+\.[0-9]+$")
TO_RE = re.compile(r"^\+?[0-9]{5,15}$")
URL_RE = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.I)

# Meta's error codes: code -> (title, HTTP status of the synchronous answer)
ERROR_CODES = {
    0: ("AuthException", 401),
    1: ("API Unknown", 400),
    2: ("API Service", 503),
    3: ("API Method", 500),
    4: ("API Too Many Calls", 400),
    10: ("Permission Denied", 403),
    33: ("Parameter value is not valid", 400),
    100: ("Invalid parameter", 400),
    190: ("Access token has expired", 401),
    368: ("Temporarily blocked for policies violations", 403),
    80007: ("Rate limit issues", 400),
    130429: ("Rate limit hit", 400),
    130472: ("User's number is part of an experiment", 400),
    130497: ("Business account is restricted from messaging users in this "
             "country", 403),
    131000: ("Something went wrong", 500),
    131005: ("Access denied", 403),
    131008: ("Required parameter is missing", 400),
    131009: ("Parameter value is not valid", 400),
    131016: ("Service unavailable", 500),
    131021: ("Recipient cannot be sender", 400),
    131026: ("Message Undeliverable", 400),
    131031: ("Account has been locked", 403),
    131047: ("Re-engagement message", 400),
    131048: ("Spam rate limit hit", 400),
    131049: ("Meta chose not to deliver", 400),
    131050: ("User has stopped receipt of marketing messages", 400),
    131051: ("Unsupported message type", 400),
    131052: ("Media download error", 400),
    131053: ("Media upload error", 400),
    131056: ("(Business Account, Consumer Account) pair rate limit hit", 400),
    131057: ("Account in maintenance mode", 500),
    132000: ("Template Param Count Mismatch", 400),
    132001: ("Template does not exist", 404),
    132015: ("Template is Paused", 400),
    132016: ("Template is Disabled", 400),
    133010: ("Phone number Not Registered", 400),
}

# the details the fake puts in error_data when the test gives none
DEFAULT_DETAILS = {
    4: "The app has reached its API call rate limit.",
    80007: "The WhatsApp Business Account has reached its rate limit.",
    130429: "Cloud API message throughput has been reached.",
    131047: "More than 24 hours have passed since the recipient last "
            "replied to the sender number.",
    131056: "Too many messages sent from the sender phone number to the "
            "same recipient phone number in a short period of time.",
}

MESSAGE_TYPES = ("text", "image", "audio", "video", "document", "sticker",
                 "location", "contacts", "interactive", "template",
                 "reaction")
SEND_KEYS = ("messaging_product", "recipient_type", "to", "type", "context",
             "biz_opaque_callback_data") + MESSAGE_TYPES
READ_KEYS = ("messaging_product", "status", "message_id", "typing_indicator")
READ_ONLY_KEYS = ("status", "message_id", "typing_indicator")
MEDIA_KEYS = {"image": ("id", "link", "caption"),
              "video": ("id", "link", "caption"),
              "document": ("id", "link", "caption", "filename"),
              "audio": ("id", "link", "voice"),
              "sticker": ("id", "link")}
TEXT_MAX = 4096
CAPTION_MAX = 1024
OPAQUE_MAX = 512


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

def fbtrace_id():
    return base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("=")


def graph_error(code, message=None, details=None, etype="OAuthException",
                subcode=None):
    """Meta's synchronous error body:
    {"error": {"message", "type", "code", "error_data": {"messaging_product",
    "details"}, "fbtrace_id"}} (error_subcode only when given)."""
    title = ERROR_CODES.get(code, ("Error", 400))[0]
    if message is None:
        message = "(#%d) %s" % (code, title)
    err = {"message": message, "type": etype, "code": code}
    if details is None:
        details = DEFAULT_DETAILS.get(code, title)
    if details is not False:
        err["error_data"] = {"messaging_product": "whatsapp",
                             "details": details}
    if subcode is not None:
        err["error_subcode"] = subcode
    err["fbtrace_id"] = fbtrace_id()
    return {"error": err}


class GraphError(Exception):
    """A Graph error answer: HTTP status and graph_error() body."""

    def __init__(self, code, details=None, status=None, message=None,
                 etype="OAuthException", subcode=None):
        Exception.__init__(self, code, details)
        self.code = code
        self.status = status or ERROR_CODES.get(code, ("", 400))[1]
        self.body = graph_error(code, message, details, etype, subcode)

    def reply(self, headers=None):
        return Reply(self.status, self.body, headers)


def invalid(details):
    """Code 100 (Invalid parameter) with details saying what is wrong."""
    return GraphError(100, details, message="(#100) " + details)


def unsupported(method, obj_id):
    msg = ("Unsupported %s request. Object with ID '%s' does not exist, "
           "cannot be loaded due to missing permissions, or does not support "
           "this operation." % (method.lower(), obj_id))
    return GraphError(100, False, message=msg, etype="GraphMethodException",
                      subcode=33)


def bad_token():
    return GraphError(190, False, status=401, message="Invalid OAuth access "
                      "token - Cannot parse access token")


# ---------------------------------------------------------------------------
# body checks (shared by FakeMeta and FakeKapso's Meta-compatible API)
# ---------------------------------------------------------------------------

def _keys(obj, allowed, where):
    if not isinstance(obj, dict):
        raise invalid("Param %s must be a JSON object" % where)
    for k in obj:
        if k not in allowed:
            raise invalid("Unexpected key \"%s\" on param %s" % (k, where))


def _str(obj, key, where, required=True, empty=False, maxlen=None):
    name = "%s['%s']" % (where, key) if where else key
    if key not in obj:
        if required:
            raise invalid("The parameter %s is required." % name)
        return None
    v = obj[key]
    if not isinstance(v, str):
        raise invalid("Param %s must be a string" % name)
    if not empty and not v.strip():
        raise invalid("Param %s must be non-empty" % name)
    if maxlen is not None and len(v) > maxlen:
        raise invalid("Param %s must be at most %d characters long"
                      % (name, maxlen))
    return v


def _number(obj, key, where):
    name = "%s['%s']" % (where, key)
    if key not in obj:
        raise invalid("The parameter %s is required." % name)
    v = obj[key]
    if isinstance(v, bool):
        raise invalid("Param %s must be a number" % name)
    if isinstance(v, (int, float)):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        raise invalid("Param %s must be a number" % name)


def _check_media(kind, obj):
    _keys(obj, MEDIA_KEYS[kind], kind)
    has_id, has_link = "id" in obj, "link" in obj
    if has_id == has_link:
        raise invalid("Param %s must have exactly one of id and link" % kind)
    if has_id:
        _str(obj, "id", kind)
    else:
        link = _str(obj, "link", kind)
        if not URL_RE.match(link):
            raise invalid("Param %s['link'] must be an http(s) URL" % kind)
    _str(obj, "caption", kind, required=False, empty=True,
         maxlen=CAPTION_MAX)
    _str(obj, "filename", kind, required=False)
    if "voice" in obj and not isinstance(obj["voice"], bool):
        raise invalid("Param %s['voice'] must be a boolean" % kind)


def _check_content(kind, obj):
    if kind == "text":
        _keys(obj, ("body", "preview_url"), "text")
        _str(obj, "body", "text", maxlen=TEXT_MAX)
        if "preview_url" in obj and not isinstance(obj["preview_url"], bool):
            raise invalid("Param text['preview_url'] must be a boolean")
    elif kind in MEDIA_KEYS:
        _check_media(kind, obj)
    elif kind == "location":
        _keys(obj, ("latitude", "longitude", "name", "address"), "location")
        _number(obj, "latitude", "location")
        _number(obj, "longitude", "location")
        _str(obj, "name", "location", required=False, empty=True)
        _str(obj, "address", "location", required=False, empty=True)
    elif kind == "contacts":
        if not isinstance(obj, list) or not obj:
            raise invalid("Param contacts must be a non-empty array")
        for i, c in enumerate(obj):
            where = "contacts[%d]" % i
            if not isinstance(c, dict):
                raise invalid("Param %s must be a JSON object" % where)
            name = c.get("name")
            if not isinstance(name, dict):
                raise invalid("The parameter %s['name'] is required." % where)
            _str(name, "formatted_name", where + "['name']")
    elif kind == "interactive":
        _keys(obj, ("type", "header", "body", "footer", "action"),
              "interactive")
        _str(obj, "type", "interactive")
        if not isinstance(obj.get("action"), dict):
            raise invalid("The parameter interactive['action'] is required.")
    elif kind == "template":
        _keys(obj, ("name", "language", "components"), "template")
        _str(obj, "name", "template")
        lang = obj.get("language")
        if not isinstance(lang, dict):
            raise invalid("The parameter template['language'] is required.")
        _keys(lang, ("code", "policy"), "template['language']")
        _str(lang, "code", "template['language']")
        if "components" in obj and not isinstance(obj["components"], list):
            raise invalid("Param template['components'] must be an array")
    elif kind == "reaction":
        _keys(obj, ("message_id", "emoji"), "reaction")
        _str(obj, "message_id", "reaction")
        _str(obj, "emoji", "reaction", empty=True)


def validate_graph_body(body, require_wamid=True):
    """Check a POST /{phone_number_id}/messages body.  Returns ("read",
    info) for a read receipt (info: message_id, typing) or ("message",
    info) for a send (info: to, wa_id, type, context_id).  Raises
    GraphError (code 100) naming the first problem."""
    if not isinstance(body, dict):
        raise invalid("The parameter messaging_product is required.")
    for k in body:
        if k not in SEND_KEYS and k not in READ_KEYS:
            raise invalid("Unexpected key \"%s\" on param body" % k)
    mp = _str(body, "messaging_product", "")
    if mp != "whatsapp":
        raise invalid("Param messaging_product must be \"whatsapp\"")
    if any(k in body for k in READ_ONLY_KEYS):
        for k in body:
            if k not in READ_KEYS:
                raise invalid("Unexpected key \"%s\" on param body (a read "
                              "receipt takes status, message_id and "
                              "typing_indicator)" % k)
        if _str(body, "status", "") != "read":
            raise invalid("Param status must be \"read\"")
        mid = _str(body, "message_id", "")
        if require_wamid and not mid.startswith("wamid."):
            raise invalid("Param message_id must be a WhatsApp message id "
                          "(wamid.*)")
        typing = None
        if "typing_indicator" in body:
            ti = body["typing_indicator"]
            _keys(ti, ("type",), "typing_indicator")
            typing = _str(ti, "type", "typing_indicator")
            if typing != "text":
                raise invalid("Param typing_indicator['type'] must be "
                              "\"text\"")
        return "read", {"message_id": mid, "typing": typing}
    if "recipient_type" in body and body["recipient_type"] != "individual":
        raise invalid("Param recipient_type must be \"individual\"")
    to = _str(body, "to", "")
    if not TO_RE.match(to):
        raise invalid("Param to must be a phone number or WhatsApp id: "
                      "digits, optionally after +")
    kind = body.get("type", "text")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        raise invalid("Param type must be one of %s" % ", ".join(
            MESSAGE_TYPES))
    if kind not in body:
        raise invalid("The parameter %s is required." % kind)
    for other in MESSAGE_TYPES:
        if other != kind and other in body:
            raise invalid("Unexpected key \"%s\" on param body (type is "
                          "%s)" % (other, kind))
    _check_content(kind, body[kind])
    ctx = None
    if "context" in body:
        if kind == "reaction":
            raise invalid("Param context is not allowed on a reaction")
        _keys(body["context"], ("message_id",), "context")
        ctx = _str(body["context"], "message_id", "context")
    _str(body, "biz_opaque_callback_data", "", required=False, empty=True,
         maxlen=OPAQUE_MAX)
    return "message", {"to": to, "wa_id": to.lstrip("+"), "type": kind,
                       "context_id": ctx}


def is_json_request(req):
    ct = req["headers"].get("content-type", "")
    return ct.lower().split(";")[0].strip() == "application/json"


_wamids = set()


def new_wamid():
    """A unique id shaped like Meta's: "wamid." and base64 text."""
    while True:
        w = "wamid." + base64.b64encode(b"\x15\x02\x00\x11\x18\x12" +
                                        os.urandom(21)).decode()
        if w not in _wamids:
            _wamids.add(w)
            return w


# ---------------------------------------------------------------------------
# the send, read and media API, shared by FakeMeta and FakeKapso
# ---------------------------------------------------------------------------

class GraphSendAPI:
    """Mixin for a FakeServer subclass.  The class calls _graph_setup() in
    __init__ and routes Graph-shaped paths to _graph_route(); it provides
    _graph_auth(req) (raise Reply or GraphError on failure) and
    _media_answer(media_id) (the URL fields of a media answer)."""

    api_name = "meta"
    require_wamid = True
    file_size_as_int = False

    def _graph_setup(self, phone_number_ids, versions, media_url_ttl):
        self.phone_number_ids = [str(p) for p in phone_number_ids]
        self.versions = set(versions)
        self.media_url_ttl = media_url_ttl
        self.clock_offset = 0.0
        self._send_fail = []        # [remaining, dict]
        self._media_bytes = {}      # media id -> bytes
        self._media_urls = {}       # url token -> {id, expires}
        self.state.update({
            "sent": [],             # accepted messages
            "reads": [],            # accepted read receipts
            "send_failures": [],    # sends answered by fail_next_send
            "media": {},            # media id -> metadata
        })

    # -- knobs and records --------------------------------------------------
    def now(self):
        """The fake's clock for URL expiry: time.time() + clock_offset."""
        return time.time() + self.clock_offset

    def advance_clock(self, seconds):
        with self.lock:
            self.clock_offset += seconds

    def add_phone_number_id(self, phone_number_id):
        with self.lock:
            self.phone_number_ids.append(str(phone_number_id))

    @property
    def phone_number_id(self):
        return self.phone_number_ids[0]

    @property
    def sent(self):
        with self.lock:
            return list(self.state["sent"])

    @property
    def reads(self):
        with self.lock:
            return list(self.state["reads"])

    @property
    def send_failures(self):
        with self.lock:
            return list(self.state["send_failures"])

    def add_media(self, media_id, body_bytes, mime_type, phone_number_id=None,
                  sha256=None):
        """Register media for GET /{version}/{media_id}.  sha256 overrides
        the reported hash (default: hex SHA-256 of body_bytes), to test a
        mismatch.  phone_number_id: the number it belongs to (None: any)."""
        media_id = str(media_id)
        body_bytes = bytes(body_bytes)
        with self.lock:
            self._media_bytes[media_id] = body_bytes
            self.state["media"][media_id] = {
                "id": media_id, "mime_type": mime_type,
                "sha256": sha256 or hashlib.sha256(body_bytes).hexdigest(),
                "file_size": len(body_bytes),
                "phone_number_id": (None if phone_number_id is None
                                    else str(phone_number_id))}
        return media_id

    def fail_next_send(self, code, status=None, message=None, n=1,
                       retry_after=None, details=None, phone_number_id=None,
                       reads=False):
        """Answer the next n valid sends (to phone_number_id, or any) with
        Meta's error body for `code` and HTTP `status` (default: the status
        Meta lists for that code, else 400).  retry_after adds that
        Retry-After header.  reads=True lets read receipts use them up too.
        Invalid requests are still rejected as usual first."""
        with self.lock:
            self._send_fail.append([int(n), {
                "code": int(code), "status": status, "message": message,
                "details": details, "retry_after": retry_after,
                "phone_number_id": (None if phone_number_id is None
                                    else str(phone_number_id)),
                "reads": reads}])

    def _send_times(self, phone_number_id, attempts):
        pid = None if phone_number_id is None else str(phone_number_id)
        with self.lock:
            if attempts:
                return sorted(r["time"] for r in self.requests
                              if r.get("graph_kind") == "message"
                              and (pid is None
                                   or r.get("phone_number_id") == pid))
            return sorted(s["time"] for s in self.state["sent"]
                          if pid is None or s["phone_number_id"] == pid)

    def sends_per_second(self, phone_number_id=None, attempts=False):
        """Accepted sends per second: element i counts the sends that
        arrived i..i+1 s after the first one.  attempts=True counts every
        valid send request, failed ones too."""
        times = self._send_times(phone_number_id, attempts)
        if not times:
            return []
        out = [0] * (int(times[-1] - times[0]) + 1)
        for t in times:
            out[int(t - times[0])] += 1
        return out

    def max_per_window(self, phone_number_id=None, window=1.0,
                       attempts=False):
        """The most sends that arrived within any `window` seconds."""
        times = self._send_times(phone_number_id, attempts)
        best = lo = 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    # -- routes -------------------------------------------------------------
    def _graph_route(self, req, rest):
        """rest: the path after the API base, e.g. "/v21.0/123/messages".
        Returns a Reply, or None when the path is not a Graph route."""
        m = re.match(r"^/([^/]+)/([^/]+)(/messages)?/?$", rest)
        if not m:
            return None
        version, obj, messages = m.group(1), m.group(2), m.group(3)
        try:
            self._graph_auth(req)
            if not VERSION_RE.match(version) or version not in self.versions:
                raise invalid("Unsupported version %s (this fake accepts %s)"
                              % (version, ", ".join(sorted(self.versions))))
            if messages:
                return self._messages(req, version, obj)
            if req["method"] != "GET":
                raise unsupported(req["method"], obj)
            return self._media_get(req, version, obj)
        except GraphError as e:
            return e.reply()

    def _graph_phone(self, req, pid):
        if pid not in self.phone_number_ids:
            raise unsupported(req["method"], pid)

    def _messages(self, req, version, pid):
        if req["method"] != "POST":
            raise unsupported(req["method"], pid + "/messages")
        self._graph_phone(req, pid)
        body = req["json"] if is_json_request(req) else None
        if (is_json_request(req) and req["body"].strip()
                and req["json"] is None):
            raise invalid("The request body is not valid JSON")
        kind, info = validate_graph_body(body, self.require_wamid)
        req["graph_kind"] = kind
        req["phone_number_id"] = pid
        fail = self._take_send_fail(pid, kind)
        now = time.time()
        if fail is not None:
            code, status = fail["code"], fail["status"]
            e = GraphError(code, fail["details"], status, fail["message"])
            self.state["send_failures"].append({
                "code": code, "status": e.status, "kind": kind,
                "phone_number_id": pid, "body": body, "time": now})
            h = {}
            if fail["retry_after"] is not None:
                h["Retry-After"] = fail["retry_after"]
            return e.reply(h)
        if kind == "read":
            self.state["reads"].append({
                "api": self.api_name, "version": version,
                "phone_number_id": pid, "message_id": info["message_id"],
                "typing": info["typing"] == "text", "body": body,
                "time": now})
            return Reply(200, {"success": True})
        wamid = new_wamid()
        self.state["sent"].append({
            "api": self.api_name, "version": version, "wamid": wamid,
            "phone_number_id": pid, "to": info["to"],
            "wa_id": info["wa_id"], "type": info["type"],
            "context_id": info["context_id"], "body": body, "time": now})
        return Reply(200, {"messaging_product": "whatsapp",
                           "contacts": [{"input": info["to"],
                                         "wa_id": info["wa_id"]}],
                           "messages": [{"id": wamid}]})

    def _take_send_fail(self, pid, kind):
        for item in self._send_fail:
            f = item[1]
            if item[0] <= 0 or (kind == "read" and not f["reads"]):
                continue
            if f["phone_number_id"] not in (None, pid):
                continue
            item[0] -= 1
            if item[0] == 0:
                self._send_fail.remove(item)
            return f
        return None

    def _media_phone(self, req):
        """The phone_number_id query parameter (optional on Meta)."""
        return req["query"].get("phone_number_id", [None])[0]

    def _media_get(self, req, version, media_id):
        pid = self._media_phone(req)
        meta = self.state["media"].get(media_id)
        if meta is None:
            raise unsupported("GET", media_id)
        if pid is not None and meta["phone_number_id"] not in (None, pid):
            raise unsupported("GET", media_id)
        size = meta["file_size"]
        out = {"messaging_product": "whatsapp", "id": media_id,
               "mime_type": meta["mime_type"], "sha256": meta["sha256"],
               "file_size": size if self.file_size_as_int else str(size)}
        out.update(self._media_answer(media_id))
        return Reply(200, out)

    def _issue_url(self, media_id, ttl, kind):
        """A new URL token for media_id, live for ttl seconds of now()."""
        token = secrets.token_urlsafe(24)
        expires = self.now() + ttl
        self._media_urls[token] = {"id": media_id, "expires": expires,
                                   "kind": kind}
        return token, expires

    def _media_bytes_for(self, token, kind):
        """(media metadata, bytes) for a live URL token, else None."""
        u = self._media_urls.get(token or "")
        if u is None or u["kind"] != kind or self.now() >= u["expires"]:
            return None
        return self.state["media"][u["id"]], self._media_bytes[u["id"]]

    @staticmethod
    def _bytes_reply(meta, data):
        return Reply(200, headers={"Content-Type": meta["mime_type"]},
                     raw=data)


# ---------------------------------------------------------------------------
# Meta
# ---------------------------------------------------------------------------

DOWNLOAD_PATH = "/media-download/"


class FakeMeta(GraphSendAPI, FakeServer):
    """Meta's Graph API for WhatsApp Cloud: POST /{version}/{phone_number_id}
    /messages (send, read receipt + typing), GET /{version}/{media_id} and
    the media download URL it hands out.  See README.md."""

    def __init__(self, access_tokens=(DEFAULT_META_TOKEN,),
                 phone_number_ids=(DEFAULT_PHONE_NUMBER_ID,),
                 versions=(DEFAULT_VERSION,), media_url_ttl=300,
                 host="127.0.0.1", port=0, verbose=False):
        FakeServer.__init__(self, host, port, verbose)
        self.access_tokens = set(access_tokens)
        self.state = {}
        self._graph_setup(phone_number_ids, versions, media_url_ttl)

    @property
    def api_url(self):
        """What walua's meta.api_url points at (requests go to
        api_url/{version}/...)."""
        return self.url

    def throttle_body(self):
        return graph_error(130429)

    def maintenance_body(self):
        return graph_error(2, details="Service temporarily unavailable")

    def _graph_auth(self, req):
        h = req["headers"].get("authorization", "")
        parts = h.split(None, 1)
        if (len(parts) != 2 or parts[0].lower() != "bearer"
                or parts[1].strip() not in self.access_tokens):
            raise bad_token()

    def _media_answer(self, media_id):
        token, _ = self._issue_url(media_id, self.media_url_ttl, "meta")
        return {"url": "%s%s%s?token=%s" % (self.url, DOWNLOAD_PATH,
                                            urllib.parse.quote(media_id),
                                            token)}

    def handle(self, req):
        path = req["path"]
        if path.startswith(DOWNLOAD_PATH):
            if req["method"] != "GET":
                raise Reply(405, None, {"Allow": "GET"})
            try:
                self._graph_auth(req)
            except GraphError as e:
                return e.reply()
            got = self._media_bytes_for(req["query"].get("token", [""])[0],
                                        "meta")
            if got is None or got[0]["id"] != path[len(DOWNLOAD_PATH):]:
                raise Reply(404, None)
            return self._bytes_reply(*got)
        r = self._graph_route(req, path)
        if r is None:
            raise GraphError(100, False, message="Unknown path components: "
                             + path).reply()
        return r


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Meta WhatsApp Cloud API")
    add_common_args(ap)
    ap.add_argument("--token", action="append",
                    help="accepted access token (repeatable; default %s)"
                    % DEFAULT_META_TOKEN)
    ap.add_argument("--phone-number-id", action="append",
                    help="known phone_number_id (repeatable; default %s)"
                    % DEFAULT_PHONE_NUMBER_ID)
    ap.add_argument("--graph-version", action="append",
                    help="accepted Graph version (repeatable; default %s)"
                    % DEFAULT_VERSION)
    a = ap.parse_args(argv)
    fake = FakeMeta(access_tokens=a.token or (DEFAULT_META_TOKEN,),
                    phone_number_ids=(a.phone_number_id
                                      or (DEFAULT_PHONE_NUMBER_ID,)),
                    versions=a.graph_version or (DEFAULT_VERSION,),
                    host=a.host, port=a.port, verbose=a.verbose)
    run_standalone(fake, min(a.seconds, 3600.0), a.dump)
    return 0


if __name__ == "__main__":
    sys.exit(main())
