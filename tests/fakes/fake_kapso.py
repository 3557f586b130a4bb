#!/usr/bin/env python3
"""fake_kapso.py - a strict fake of Kapso's legacy v1 management API for
WhatsApp webhooks and of Kapso's Meta-compatible API (send, mark read with
typing, media) for walua's tests.  Standard library only.

    from fake_kapso import FakeKapso
    with FakeKapso() as srv:
        ... point kapso.api_url at srv.api_url (= srv.url + "/api/v1") and
        kapso.meta_url at srv.meta_url (= srv.url + "/meta/whatsapp") ...
        cfg = srv.config_id

Standalone:  python3 tests/fakes/fake_kapso.py --port 0 --seconds 60
prints "listening http://127.0.0.1:PORT" and serves until the time is up.
See tests/fakes/README.md.
"""
import argparse
import math
import os
import re
import secrets
import sys
import time
import urllib.parse
import uuid

try:
    from fake_insider import (FakeServer, Reply, add_common_args, is_int,
                              is_url, looks_masked, run_standalone, utc_now)
    from fake_meta import GraphSendAPI, bad_token
except ImportError:                     # imported by path / from elsewhere
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fake_insider import (FakeServer, Reply, add_common_args, is_int,
                              is_url, looks_masked, run_standalone, utc_now)
    from fake_meta import GraphSendAPI, bad_token

__all__ = ["FakeKapso", "DEFAULT_API_KEY", "DEFAULT_CONFIG_ID",
           "DEFAULT_KAPSO_PHONE_NUMBER_ID", "DEFAULT_KAPSO_VERSION", "BASE",
           "META_BASE"]

DEFAULT_API_KEY = "kapso-test-api-key-0123456789"
DEFAULT_CONFIG_ID = "9e8d7c6b-5a4f-3e2d-1c0b-9a8f7e6d5c4b"
DEFAULT_KAPSO_PHONE_NUMBER_ID = "647015955153740"
DEFAULT_KAPSO_VERSION = "v24.0"
BASE = "/api/v1"
META_BASE = "/meta/whatsapp"
MEDIA_DOWNLOAD = META_BASE + "/media_download"
LOOKASIDE = "/lookaside/whatsapp_business/attachments/"

NOT_FOUND = {"error": "Resource not found", "status": 404,
             "message": "The requested resource could not be found"}
UNAUTHORIZED = {"error": "Unauthorized"}
NO_NUMBER = {"error": "WhatsApp configuration not found for this phone "
             "number"}
BAD_DOWNLOAD = {"error": "Invalid or expired download token"}
WRAPPER = "whatsapp_webhook"

# key -> validator(value) returning an error string or None
FIELDS = ("url", "secret_key", "events", "active", "headers", "retry_config",
          "buffer_enabled", "buffer_window_seconds", "max_buffer_size",
          "buffer_events", "inactivity_minutes")
BUFFER_DEFAULTS = {"buffer_enabled": False, "buffer_window_seconds": 5,
                   "max_buffer_size": 50,
                   "buffer_events": ["whatsapp.message.received"],
                   "inactivity_minutes": 60}


def _int_range(lo, hi):
    def check(v, name):
        if not is_int(v) or not lo <= v <= hi:
            return "%s must be between %d and %d" % (name, lo, hi)
    return check


class FakeKapso(GraphSendAPI, FakeServer):
    """Kapso legacy v1: /api/v1/whatsapp_configs/{id}/whatsapp_webhooks, and
    the Meta-compatible API under /meta/whatsapp/{version}/ (X-API-Key)."""

    api_name = "kapso"

    def __init__(self, api_keys=(DEFAULT_API_KEY,),
                 config_ids=(DEFAULT_CONFIG_ID,), allowed_events=None,
                 allow_http=True,
                 phone_number_ids=(DEFAULT_KAPSO_PHONE_NUMBER_ID,),
                 meta_versions=(DEFAULT_KAPSO_VERSION,), media_url_ttl=300,
                 download_ttl=240, host="127.0.0.1", port=0, verbose=False):
        FakeServer.__init__(self, host, port, verbose)
        self.api_keys = set(api_keys)
        self.config_ids = list(config_ids)
        self.allowed_events = (None if allowed_events is None
                               else set(allowed_events))
        self.allow_http = allow_http
        # id -> record as returned plus "whatsapp_config_id"
        self.state = {"webhooks": {}, "deleted": []}
        self.download_ttl = download_ttl
        self._graph_setup(phone_number_ids, meta_versions, media_url_ttl)

    @property
    def api_url(self):
        return self.url + BASE

    @property
    def meta_url(self):
        """What walua's kapso.meta_url points at (requests go to
        meta_url/{version}/...)."""
        return self.url + META_BASE

    def add_media(self, media_id, body_bytes, mime_type, phone_number_id=None,
                  sha256=None):
        """As FakeMeta.add_media; phone_number_id defaults to the first
        configured one (Kapso needs the number to find the media)."""
        return GraphSendAPI.add_media(
            self, media_id, body_bytes, mime_type,
            phone_number_id or self.phone_number_ids[0], sha256)

    # -- Meta-compatible API --------------------------------------------------
    def _graph_auth(self, req):
        if req["headers"].get("x-api-key") not in self.api_keys:
            raise Reply(401, UNAUTHORIZED)

    def _graph_phone(self, req, pid):
        if pid not in self.phone_number_ids:
            raise Reply(404, NO_NUMBER)

    def _media_phone(self, req):
        pid = req["query"].get("phone_number_id", [""])[0]
        if not pid:
            raise Reply(400, {"error": "phone_number_id query parameter is "
                              "required"})
        self._graph_phone(req, pid)
        return pid

    def _media_answer(self, media_id):
        dl, expires = self._issue_url(media_id, self.download_ttl, "kapso")
        return {"url": "%s%s?mid=%s&hash=%s" % (
                    self.url, LOOKASIDE, urllib.parse.quote(media_id),
                    secrets.token_urlsafe(12)),
                "download_url": "%s%s?token=%s" % (self.url, MEDIA_DOWNLOAD,
                                                   dl),
                "download_url_expires_at": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))}

    def _meta_proxy(self, req):
        path = req["path"]
        if path == MEDIA_DOWNLOAD:
            if req["method"] != "GET":
                raise Reply(405, None, {"Allow": "GET"})
            got = self._media_bytes_for(req["query"].get("token", [""])[0],
                                        "kapso")
            if got is None:
                raise Reply(401, BAD_DOWNLOAD)
            return self._bytes_reply(*got)
        r = self._graph_route(req, path[len(META_BASE):])
        if r is None:
            raise Reply(404, {"error": "Not found"})
        return r

    @property
    def config_id(self):
        return self.config_ids[0]

    def add_config(self, config_id=None):
        config_id = config_id or str(uuid.uuid4())
        with self.lock:
            self.config_ids.append(config_id)
        return config_id

    def webhooks(self, config_id=None):
        """Stored records (as the API returns them), oldest first."""
        with self.lock:
            return [self._public(w) for w in self.state["webhooks"].values()
                    if config_id is None
                    or w["whatsapp_config_id"] == config_id]

    def throttle_body(self):
        return {"error": "Too many requests"}

    def maintenance_body(self):
        return {"status": "error", "message": "Service unavailable"}

    # -- dispatch -----------------------------------------------------------
    def handle(self, req):
        path, m = req["path"], req["method"]
        if path.startswith(META_BASE + "/"):
            return self._meta_proxy(req)
        if path.startswith(LOOKASIDE):
            # Meta's CDN URL: it needs Meta's access token, not Kapso's key
            raise bad_token().reply()
        mm = re.match(r"^%s/whatsapp_configs/([^/]+)/whatsapp_webhooks"
                      r"(?:/([^/]+))?/?$" % re.escape(BASE), path)
        if not path.startswith(BASE + "/"):
            raise Reply(404, {"error": "Not found"})
        if req["headers"].get("x-api-key") not in self.api_keys:
            raise Reply(401, UNAUTHORIZED)
        if not mm or mm.group(1) not in self.config_ids:
            raise Reply(404, NOT_FOUND)
        cfg, wid = mm.group(1), mm.group(2)
        if wid is None:
            if m == "GET":
                return self._list(req, cfg)
            if m == "POST":
                return self._create(req, cfg)
        else:
            w = self.state["webhooks"].get(wid)
            if w is None or w["whatsapp_config_id"] != cfg:
                raise Reply(404, NOT_FOUND)
            if m == "GET":
                return Reply(200, {"data": self._public(w)})
            if m in ("PATCH", "PUT"):
                return self._update(req, w)
            if m == "DELETE":
                del self.state["webhooks"][wid]
                self.state["deleted"].append(w)
                return Reply(204)
        raise Reply(404, {"error": "Not found"})

    @staticmethod
    def _public(w):
        return {k: v for k, v in w.items() if k != "whatsapp_config_id"}

    # -- list ---------------------------------------------------------------
    def _list(self, req, cfg):
        q = req["query"]
        errors = []

        def intparam(name, default, lo, hi):
            raw = q.get(name, [None])[0]
            if raw is None or raw == "":
                return default
            if not re.match(r"^-?[0-9]+$", raw) or not lo <= int(raw) <= hi:
                errors.append("%s must be between %d and %d" % (name, lo, hi)
                              if hi < 10 ** 9 else
                              "%s must be greater than or equal to %d"
                              % (name, lo))
                return default
            return int(raw)

        page = intparam("page", 1, 1, 10 ** 9)
        per_page = intparam("per_page", 20, 1, 100)
        active = q.get("q[active_eq]", [None])[0]
        if active not in (None, "", "true", "false", "1", "0"):
            errors.append("q[active_eq] must be true or false")
        if errors:
            raise Reply(422, {"error": "Invalid parameters",
                              "errors": errors})
        rows = [w for w in self.state["webhooks"].values()
                if w["whatsapp_config_id"] == cfg]
        cont = q.get("q[url_cont]", [""])[0]
        if cont:
            rows = [w for w in rows if cont in w["url"]]
        if active not in (None, ""):
            want = active in ("true", "1")
            rows = [w for w in rows if w["active"] == want]
        total = len(rows)
        chunk = rows[(page - 1) * per_page: page * per_page]
        return Reply(200, {
            "data": [self._public(w) for w in chunk],
            "meta": {"page": page, "per_page": per_page,
                     "total_pages": int(math.ceil(total / float(per_page))),
                     "total_count": total}})

    # -- create / update ----------------------------------------------------
    def _wrapped(self, req):
        ct = req["headers"].get("content-type", "")
        body = req["json"]
        if ct.lower().split(";")[0].strip() != "application/json":
            body = None                 # Rails would not parse it as JSON
        elif req["body"].strip() and body is None:
            raise Reply(400, {"error": "Bad Request", "status": 400,
                              "message": "The request body is not valid "
                              "JSON"})
        if (not isinstance(body, dict) or not isinstance(body.get(WRAPPER),
                                                         dict)
                or not body[WRAPPER]):
            raise Reply(422, {"error": "Invalid webhook",
                              "errors": ["whatsapp_webhook is missing"]})
        return body[WRAPPER]

    def _validate(self, attrs, creating):
        errors = []
        for k in attrs:
            if k not in FIELDS:
                errors.append("Unknown attribute %s" % k)
        if "url" in attrs or creating:
            u = attrs.get("url")
            if not isinstance(u, str) or not u.strip():
                errors.append("Url can't be blank")
            elif not is_url(u) or (not self.allow_http
                                   and not u.lower().startswith("https:")):
                errors.append("Url is invalid")
        if "secret_key" in attrs:
            s = attrs["secret_key"]
            if not isinstance(s, str) or not s:
                errors.append("Secret key can't be blank")
            elif looks_masked(s):
                errors.append("Secret key looks masked")
        if "events" in attrs:
            ev = attrs["events"]
            if not isinstance(ev, list) or not all(isinstance(e, str)
                                                   for e in ev):
                errors.append("Events must be an array of strings")
            elif self.allowed_events is not None:
                bad = [e for e in ev if e not in self.allowed_events]
                if bad:
                    errors.append("Events contains an invalid event: %s"
                                  % bad[0])
        for k in ("active", "buffer_enabled"):
            if k in attrs and not isinstance(attrs[k], bool):
                errors.append("%s must be true or false" % k.capitalize())
        if "headers" in attrs:
            h = attrs["headers"]
            if not isinstance(h, dict) or not all(
                    isinstance(v, str) for v in h.values()):
                errors.append("Headers must be an object of strings")
        if "retry_config" in attrs:
            rc = attrs["retry_config"]
            if not isinstance(rc, dict):
                errors.append("Retry config must be an object")
            else:
                for k in rc:
                    if k not in ("max_attempts", "backoff_seconds"):
                        errors.append("Retry config has unknown key %s" % k)
                if "max_attempts" in rc and not (
                        is_int(rc["max_attempts"]) and rc["max_attempts"] > 0):
                    errors.append("Retry config max_attempts must be "
                                  "greater than 0")
                if "backoff_seconds" in rc and not (
                        is_int(rc["backoff_seconds"])
                        and rc["backoff_seconds"] >= 0):
                    errors.append("Retry config backoff_seconds must be "
                                  "greater than or equal to 0")
        for k, chk in (("buffer_window_seconds", _int_range(1, 60)),
                       ("max_buffer_size", _int_range(1, 100)),
                       ("inactivity_minutes", _int_range(1, 1440))):
            if k in attrs:
                e = chk(attrs[k], k.replace("_", " ").capitalize())
                if e:
                    errors.append(e)
        if "buffer_events" in attrs:
            be = attrs["buffer_events"]
            if not isinstance(be, list) or any(
                    e != "whatsapp.message.received" for e in be):
                errors.append("Buffer events can only contain "
                              "whatsapp.message.received")
        if errors:
            raise Reply(422, {"error": "Invalid webhook", "errors": errors})

    def _create(self, req, cfg):
        attrs = self._wrapped(req)
        self._validate(attrs, True)
        now = utc_now()
        rec = {"id": str(uuid.uuid4()), "url": attrs["url"],
               "secret_key": attrs.get("secret_key") or secrets.token_hex(32),
               "events": list(attrs.get("events")
                              or ["whatsapp.message.received"]),
               "active": attrs.get("active", True),
               "headers": dict(attrs.get("headers") or {})}
        if "retry_config" in attrs:
            rec["retry_config"] = dict(attrs["retry_config"])
        for k, v in BUFFER_DEFAULTS.items():
            rec[k] = attrs.get(k, v)
        rec["created_at"] = rec["updated_at"] = now
        rec["whatsapp_config_id"] = cfg
        self.state["webhooks"][rec["id"]] = rec
        return Reply(201, {"data": self._public(rec)})

    def _update(self, req, w):
        attrs = self._wrapped(req)
        self._validate(attrs, False)
        for k, v in attrs.items():
            w[k] = dict(v) if isinstance(v, dict) else (
                list(v) if isinstance(v, list) else v)
        w["updated_at"] = utc_now()
        return Reply(200, {"data": self._public(w)})


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Kapso management and "
                                 "Meta-compatible APIs")
    add_common_args(ap)
    ap.add_argument("--api-key", action="append",
                    help="accepted X-API-Key (repeatable; default %s)"
                    % DEFAULT_API_KEY)
    ap.add_argument("--config-id", action="append",
                    help="known whatsapp_config id (repeatable; default %s)"
                    % DEFAULT_CONFIG_ID)
    ap.add_argument("--phone-number-id", action="append",
                    help="phone_number_id of the Meta-compatible API "
                    "(repeatable; default %s)" % DEFAULT_KAPSO_PHONE_NUMBER_ID)
    ap.add_argument("--graph-version", action="append",
                    help="accepted version of the Meta-compatible API "
                    "(repeatable; default %s)" % DEFAULT_KAPSO_VERSION)
    a = ap.parse_args(argv)
    fake = FakeKapso(api_keys=a.api_key or (DEFAULT_API_KEY,),
                     config_ids=a.config_id or (DEFAULT_CONFIG_ID,),
                     phone_number_ids=(a.phone_number_id
                                       or (DEFAULT_KAPSO_PHONE_NUMBER_ID,)),
                     meta_versions=a.graph_version or (DEFAULT_KAPSO_VERSION,),
                     host=a.host, port=a.port, verbose=a.verbose)
    run_standalone(fake, min(a.seconds, 3600.0), a.dump)
    return 0


if __name__ == "__main__":
    sys.exit(main())
