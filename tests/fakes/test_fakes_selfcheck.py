"""Self-test of the fake provider servers (fake_insider.py, fake_kapso.py,
fake_meta.py): a few happy paths and the rejections that bindings must not
trigger."""
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from fake_insider import (DEFAULT_AUTH_KEY, DEFAULT_CLIENT_ID,  # noqa: E402
                          DEFAULT_CLIENT_SECRET, DEFAULT_PHONE, FakeInsider,
                          WEBHOOK_SCOPES)
from fake_kapso import DEFAULT_API_KEY, FakeKapso  # noqa: E402
from fake_meta import (DEFAULT_META_TOKEN,  # noqa: E402
                       DEFAULT_PHONE_NUMBER_ID, FakeMeta)


def fetch(method, url, body=None, headers=None, raw=None, timeout=10):
    """(status, headers, body bytes) without raising on 4xx/5xx."""
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = raw if raw is not None else (
        None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def call(method, url, body=None, headers=None, raw=None, timeout=10):
    """(status, headers, parsed JSON or None) without raising on 4xx/5xx."""
    status, hdrs, text = fetch(method, url, body, headers, raw, timeout)
    return status, hdrs, (json.loads(text) if text else None)


def token(srv, scopes=WEBHOOK_SCOPES):
    st, _, js = call("POST", srv.gateway_url + "/auth/token",
                     {"client_id": DEFAULT_CLIENT_ID,
                      "client_secret": DEFAULT_CLIENT_SECRET,
                      "scopes": list(scopes)})
    assert st == 200, (st, js)
    return {"Authorization": "Bearer " + js["access_token"]}


def wh_body(url="https://partner.example.com/wa/conv", secret="partner-whatsapp-secret",
            **extra):
    b = {"authType": "oauth2", "subProduct": "conversational",
         "webhookUrl": url, "events": ["reply", "read"],
         "oauth2": {"grantType": "client_credentials",
                    "tokenUrl": "https://partner.example.com/oauth/token",
                    "clientId": "partner-whatsapp-client",
                    "clientSecret": secret,
                    "scopes": ["whatsapp.read"], "expiresIn": 3600}}
    b.update(extra)
    return b


# -- Insider ---------------------------------------------------------------

def test_insider_v1_settings_and_send():
    with FakeInsider() as srv:
        u = srv.api_url
        key = {"X-INS-AUTH-KEY": DEFAULT_AUTH_KEY}
        good = {"isActive": True, "webhookUrl": "https://h.example/wh",
                "apiKey": "tok-123"}
        st, _, js = call("POST", u + "/v1/conversational/settings/update",
                         good, key)
        assert (st, js) == (200, {"message": "Settings updated successfully"})
        assert srv.settings("v1")["url_field"] == "webhookUrl"
        st, _, js = call("POST", u + "/v1/conversational/settings/update",
                         {"isActive": True, "url": "https://h.example/wh",
                          "apiKey": "tok"}, key)
        assert st == 200 and srv.settings("v1")["url_field"] == "url"
        # wrong casing, missing field, wrong key
        st, _, js = call("POST", u + "/v1/conversational/settings/update",
                         {"is_active": True, "webhook_url": "https://h/x",
                          "api_key": "t"}, key)
        assert st == 400 and js["errorCode"] == "2011", js
        st, _, js = call("POST", u + "/v1/conversational/settings/update",
                         {"isActive": True, "webhookUrl": "https://h/x"}, key)
        assert st == 400 and js["errorCode"] == "2011"
        st, _, js = call("POST", u + "/v1/conversational/settings/update",
                         good, {"x-ins-auth-key": "INS.wrong"})
        assert (st, js) == (401, {"message": "unauthorized"})
        # send
        msg = {"from": "+" + DEFAULT_PHONE, "messages": [
            {"phoneNumber": "+905551112233",
             "message": {"type": "text", "text": {"body": "hi"}}},
            {"phoneNumber": "+905551112234",
             "message": {"type": "text", "text": {"body": "yo"}}}]}
        st, _, js = call("POST", u + "/v1/conversational/send", msg, key)
        assert st == 200 and len(js["keys"]) == 2, js
        assert re.match(r"^whatsapp-[0-9a-f-]{36}$", js["keys"][0])
        assert srv.state["sent"][0]["to"] == "+905551112233"
        bad = {"messages": [{"phone_number": "+905551112233",
                             "message": {"type": "text",
                                         "text": {"body": "hi"}}}]}
        st, _, js = call("POST", u + "/v1/send", bad, key)
        assert st == 400 and js["error"]["code"] == "2002", js
        assert js["message"] == "Failed to validate request."
        assert srv.requests[-1]["status"] == 400
        assert srv.requests[-1]["headers"]["x-ins-auth-key"] == \
            DEFAULT_AUTH_KEY


def test_insider_token_and_v2_settings():
    with FakeInsider() as srv:
        g = srv.gateway_url
        st, _, js = call("POST", g + "/auth/token",
                         {"clientId": DEFAULT_CLIENT_ID,
                          "clientSecret": DEFAULT_CLIENT_SECRET,
                          "scopes": ["wa-webhook-read"]})
        assert st == 400, js
        st, _, js = call("POST", g + "/auth/token",
                         {"client_id": DEFAULT_CLIENT_ID,
                          "client_secret": "nope",
                          "scopes": ["wa-webhook-read"]})
        assert (st, js) == (401, {"message": "unauthorized"})
        st, _, js = call("POST", g + "/auth/token",
                         {"client_id": DEFAULT_CLIENT_ID,
                          "client_secret": DEFAULT_CLIENT_SECRET,
                          "scopes": ["wa-webhook-admin"]})
        assert (st, js) == (403, {"message": "insufficient scope"})
        auth = token(srv)
        assert srv.token_requests == 4
        body = {"webhook_url": "https://p.example/conv", "from": "+1234567890",
                "auth_type": "oauth2",
                "oauth2": {"grant_type": "refresh_token",
                           "token_url": "https://p.example/oauth/token",
                           "client_id": "cid", "client_secret": "csec",
                           "refresh_token": "rt", "scopes": ["webhook.write"],
                           "expires_in": 3600}}
        st, _, js = call("POST", g + "/api/wa/v2/conversational/settings",
                         body, auth)
        assert (st, js) == (200, {"message": "Settings updated successfully"})
        assert srv.settings()["oauth2"]["refresh_token"] == "rt"
        no_rt = json.loads(json.dumps(body))
        del no_rt["oauth2"]["refresh_token"]
        st, _, js = call("POST", g + "/api/wa/v2/conversational/settings",
                         no_rt, auth)
        assert st == 400 and js["errorCode"] == "2011", js
        camel = {"webhookUrl": "https://p.example/conv", "authType": "bearer",
                 "apiKey": "k"}
        st, _, js = call("POST", g + "/api/wa/v2/conversational/settings",
                         camel, auth)
        assert st == 400 and js["errorCode"] == "2011"
        st, _, js = call("POST", g + "/api/wa/v2/conversational/settings",
                         raw=b"{not json", headers=auth)
        assert st == 400 and js["errorCode"] == "2010"
        zero = json.loads(json.dumps(body))
        zero["oauth2"]["expires_in"] = 0
        st, _, js = call("POST", g + "/api/wa/v2/conversational/settings",
                         zero, auth)
        assert st == 400
        # v2 send
        st, _, js = call("POST", g + "/api/wa/v2/conversational/messages/send",
                         {"from": "+" + DEFAULT_PHONE, "messages": [
                             {"phone_number": "+905551112233",
                              "message": {"type": "text",
                                          "text": {"body": "hi"}}}]}, auth)
        assert st == 200 and len(js["keys"]) == 1, js
        st, _, js = call("POST", g + "/api/wa/v2/conversational/messages/send",
                         {"messages": [{"phoneNumber": "+905551112233",
                                        "message": {"type": "text",
                                                    "text": {"body": "x"}}}]},
                         auth)
        assert st == 400 and js["error"]["code"] == "2002"
        # revoked token
        srv.revoke_tokens()
        st, _, js = call("POST", g + "/api/wa/v2/conversational/settings",
                         body, auth)
        assert (st, js) == (401, {"message": "unauthorized"})
        st, _, js = call("GET", g + "/api/wa/v2/webhooks?phoneNumber=" +
                         DEFAULT_PHONE)
        assert st == 401


def test_insider_webhooks_crud():
    with FakeInsider() as srv:
        base = srv.gateway_url + "/api/wa/v2/webhooks"
        q = "?phoneNumber=" + DEFAULT_PHONE
        auth = token(srv)
        st, _, js = call("POST", base + q, wh_body(), auth)
        assert st == 200 and js["status"] is True, js
        wid = js["webhook"]
        assert isinstance(wid, int)
        st, _, js = call("GET", base + q, headers=auth)
        assert st == 200 and len(js["webhooks"]) == 1
        rec = js["webhooks"][0]
        assert rec["id"] == wid and rec["subProduct"] == "conversational"
        assert rec["oauth2"]["clientSecret"] == "partner-whatsa********"
        assert rec["createdAt"].endswith("Z") and rec["isActive"] is True
        assert srv.webhooks()[0]["oauth2"]["clientSecret"] == \
            "partner-whatsapp-secret"
        # masked secret sent back
        back = wh_body(secret=rec["oauth2"]["clientSecret"])
        del back["subProduct"]
        st, _, js = call("PUT", "%s/%d%s" % (base, wid, q), back, auth)
        assert (st, js) == (400, {"message": "clientSecret looks masked"})
        # snake_case keys
        snake = {"auth_type": "oauth2", "sub_product": "conversational",
                 "webhook_url": "https://x.example/w", "events": ["reply"],
                 "oauth2": {}}
        st, _, js = call("POST", base + q, snake, auth)
        assert st == 400, js
        # conversational without reply; bearer; duplicate; subProduct on PUT
        st, _, js = call("POST", base + q,
                         wh_body(url="https://x.example/2",
                                 events=["sent", "read"]), auth)
        assert st == 400
        st, _, js = call("POST", base + q, wh_body(authType="bearer"), auth)
        assert js["message"].startswith("V2 API only supports OAuth2"), js
        st, _, js = call("POST", base + q, wh_body(), auth)
        assert js == {"message": "This webhook URL already exists for the "
                      "selected API type"}, js
        st, _, js = call("PUT", "%s/%d%s" % (base, wid, q), wh_body(), auth)
        assert st == 400
        # update, unknown id
        upd = wh_body(url="https://partner.example.com/wa/conv2",
                      events=["reply", "sent"])
        del upd["subProduct"]
        st, _, js = call("PUT", "%s/%d%s" % (base, wid, q), upd, auth)
        assert (st, js) == (200, {"status": True, "webhook": wid}), js
        assert srv.webhooks()[0]["events"] == ["reply", "sent"]
        st, _, js = call("PUT", "%s/99999%s" % (base, q), upd, auth)
        assert st == 404
        # phoneNumber missing / unknown / with +
        st, _, js = call("GET", base, headers=auth)
        assert (st, js) == (400, {"message": "phoneNumber query parameter is "
                                  "required"})
        st, _, js = call("GET", base + "?phoneNumber=19998887777",
                         headers=auth)
        assert (st, js) == (404, {"message": "Provider not found for the "
                                  "given phone number"})
        st, _, js = call("GET", base + "?phoneNumber=%2B" + DEFAULT_PHONE,
                         headers=auth)
        assert st == 404
        # scope
        ro = token(srv, ["wa-webhook-read"])
        st, _, js = call("DELETE", "%s/%d%s" % (base, wid, q), headers=ro)
        assert (st, js) == (403, {"message": "insufficient scope"})
        st, _, js = call("DELETE", "%s/%d%s" % (base, wid, q), headers=auth)
        assert (st, js) == (200, {"status": True})
        st, _, js = call("GET", base + q, headers=ro)
        assert js == {"webhooks": []}
        assert len(srv.webhooks(include_deleted=True)) == 1


def test_insider_knobs():
    with FakeInsider(token_ttl=1) as srv:
        key = {"x-ins-auth-key": DEFAULT_AUTH_KEY}
        u = srv.api_url + "/v1/send"
        ok = {"messages": [{"phoneNumber": "+905551112233",
                            "message": {"type": "text",
                                        "text": {"body": "hi"}}}]}
        srv.throttle(2, retry_after=3)
        for _ in range(2):
            st, h, js = call("POST", u, ok, key)
            assert st == 429 and h.get("Retry-After") == "3", (st, h)
        assert call("POST", u, ok, key)[0] == 200
        srv.maintenance = True
        assert call("POST", u, ok, key)[0] == 503
        srv.maintenance = False
        srv.fail_next(400, {"message": "Message could not be sent.",
                            "error": {"code": "2003"}})
        assert call("POST", u, ok, key)[0] == 400
        auth = token(srv)
        time.sleep(1.1)
        st, _, _ = call("GET", srv.gateway_url + "/api/wa/v2/webhooks"
                        "?phoneNumber=" + DEFAULT_PHONE, headers=auth)
        assert st == 401        # expired
        srv.hang = True
        srv.hang_seconds = 5
        t0 = time.time()
        try:
            call("POST", u, ok, key, timeout=0.5)
            raise AssertionError("expected a timeout")
        except (socket.timeout, TimeoutError, urllib.error.URLError):
            pass
        assert time.time() - t0 < 3
        assert srv.requests[-1]["status"] is None
        srv.hang = False
    # stop() released the hung request


def test_fail_nth_counts_matching_requests_only():
    """fail_nth: the nth matching request gets the canned answer, the
    others (before, after, other paths or methods) are served as usual."""
    with FakeInsider() as srv:
        auth = token(srv)
        base = srv.gateway_url + "/api/wa/v2/webhooks?phoneNumber=" + \
            DEFAULT_PHONE
        err = {"message": "failed to validate request", "errorCode": "2011"}
        srv.fail_nth(2, 400, err, path="/api/wa/v2/webhooks", method="POST")
        assert call("GET", base, headers=auth)[0] == 200    # not counted
        st, _, js = call("POST", base, wh_body("https://a.example.com/1"),
                         auth)
        assert st == 200 and js["status"] is True, (st, js)
        assert call("GET", base, headers=auth)[0] == 200
        st, _, js = call("POST", base, wh_body("https://a.example.com/2"),
                         auth)
        assert (st, js) == (400, err), (st, js)
        st, _, js = call("POST", base, wh_body("https://a.example.com/2"),
                         auth)
        assert st == 200, (st, js)      # once only
        assert [w["webhookUrl"] for w in srv.webhooks()] == [
            "https://a.example.com/1", "https://a.example.com/2"]


def test_insider_separate_gateway():
    with FakeInsider(separate_gateway=True) as srv:
        assert srv.api_url != srv.gateway_url
        st, _, _ = call("POST", srv.api_url + "/auth/token",
                        {"client_id": DEFAULT_CLIENT_ID,
                         "client_secret": DEFAULT_CLIENT_SECRET,
                         "scopes": ["wa-webhook-read"]})
        assert st == 404
        token(srv)


def test_insider_standalone():
    p = subprocess.Popen([sys.executable, os.path.join(HERE,
                                                       "fake_insider.py"),
                          "--port", "0", "--seconds", "2"],
                         stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().strip()
        assert line.startswith("listening http://127.0.0.1:"), line
        url = line.split()[1]
        st, _, js = call("POST", url + "/v1/send", {"messages": []},
                         {"x-ins-auth-key": DEFAULT_AUTH_KEY})
        assert st == 400, js
    finally:
        p.wait(15)
    assert p.returncode == 0


# -- Kapso -----------------------------------------------------------------

def test_kapso_crud_and_rejections():
    with FakeKapso() as srv:
        key = {"X-API-Key": DEFAULT_API_KEY}
        base = "%s/whatsapp_configs/%s/whatsapp_webhooks" % (srv.api_url,
                                                            srv.config_id)
        st, _, js = call("GET", base, headers={"X-API-Key": "wrong"})
        assert (st, js) == (401, {"error": "Unauthorized"})
        st, _, js = call("GET", srv.api_url +
                         "/whatsapp_configs/nope/whatsapp_webhooks",
                         headers=key)
        assert st == 404 and js["error"] == "Resource not found"
        st, _, js = call("POST", base, {"url": "https://h.example/k"}, key)
        assert (st, js) == (422, {"error": "Invalid webhook",
                                  "errors": ["whatsapp_webhook is missing"]})
        st, _, js = call("POST", base, {"whatsapp_webhook": {"events": []}},
                         key)
        assert st == 422 and "Url can't be blank" in js["errors"]
        st, _, js = call("POST", base, {"whatsapp_webhook": {
            "url": "https://h.example/k", "secretKey": "s"}}, key)
        assert st == 422, js
        spec = {"url": "https://h.example/k", "secret_key": "s3cr3t",
                "events": ["whatsapp.message.received"], "active": True,
                "headers": {"X-A": "1"},
                "retry_config": {"max_attempts": 3, "backoff_seconds": 60}}
        st, _, js = call("POST", base, {"whatsapp_webhook": spec}, key)
        assert st == 201, js
        d = js["data"]
        assert d["secret_key"] == "s3cr3t" and d["retry_config"]["max_attempts"] == 3
        assert re.match(r"^[0-9a-f-]{36}$", d["id"])
        wid = d["id"]
        for i in range(3):
            call("POST", base, {"whatsapp_webhook": {
                "url": "https://other.example/%d" % i, "active": False}}, key)
        st, _, js = call("GET", base + "?page=1&per_page=2", headers=key)
        assert st == 200 and len(js["data"]) == 2
        assert js["meta"] == {"page": 1, "per_page": 2, "total_pages": 2,
                              "total_count": 4}, js["meta"]
        st, _, js = call("GET", base + "?per_page=101", headers=key)
        assert st == 422
        st, _, js = call("GET", base + "?q%5Burl_cont%5D=h.example&"
                         "q%5Bactive_eq%5D=true", headers=key)
        assert [w["id"] for w in js["data"]] == [wid]
        st, _, js = call("PATCH", base + "/" + wid,
                         {"whatsapp_webhook": {"active": False}}, key)
        assert st == 200 and js["data"]["active"] is False
        assert js["data"]["url"] == "https://h.example/k"
        st, _, js = call("PATCH", base + "/" + wid,
                         {"whatsapp_webhook": {"secret_key": "s3cr********"}},
                         key)
        assert st == 422
        st, _, js = call("GET", base + "/" + wid, headers=key)
        assert st == 200 and js["data"]["secret_key"] == "s3cr3t"
        st, _, js = call("DELETE", base + "/" + wid, headers=key)
        assert st == 204 and js is None
        st, _, js = call("GET", base + "/" + wid, headers=key)
        assert st == 404
        assert len(srv.webhooks()) == 3
        assert srv.requests[-1]["headers"]["x-api-key"] == DEFAULT_API_KEY


def test_kapso_standalone():
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_kapso.py"),
                          "--port", "0", "--seconds", "2"],
                         stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().strip()
        assert line.startswith("listening http://127.0.0.1:"), line
        st, _, _ = call("GET", line.split()[1] + "/api/v1/whatsapp_configs/x"
                        "/whatsapp_webhooks")
        assert st == 401
        st, _, js = call("POST", line.split()[1] + "/meta/whatsapp/v24.0/"
                         "647015955153740/messages", text_msg(), KAPSO_KEY)
        assert st == 200 and js["messages"][0]["id"].startswith("wamid.")
    finally:
        p.wait(15)
    assert p.returncode == 0


# -- Meta Graph API and Kapso's Meta-compatible API ------------------------

META_AUTH = {"Authorization": "Bearer " + DEFAULT_META_TOKEN}
KAPSO_KEY = {"X-API-Key": DEFAULT_API_KEY}


def text_msg(body="hello", to="14155550123", **extra):
    m = {"messaging_product": "whatsapp", "recipient_type": "individual",
         "to": to, "type": "text", "text": {"body": body}}
    m.update(extra)
    return m


INBOUND_WAMID = "wamid.HBgLMTQxNTU1NTAxMjMVAgARGBI1QjdFOTAzRjJDNDFBOEQ2NzAA"


def read_msg(typing=True, **extra):
    m = {"messaging_product": "whatsapp", "status": "read",
         "message_id": INBOUND_WAMID}
    if typing:
        m["typing_indicator"] = {"type": "text"}
    m.update(extra)
    return m


def graph_code(st, js, status=400):
    assert st == status, (st, js)
    err = js["error"]
    assert set(err) >= {"message", "type", "code", "fbtrace_id"}, js
    return err["code"]


def check_graph_messages(url, auth, srv, api):
    """The send and read checks FakeMeta and FakeKapso share."""
    st, _, js = call("POST", url, text_msg("hi there"), auth)
    assert st == 200, (st, js)
    wamid = js["messages"][0]["id"]
    assert wamid.startswith("wamid.")
    assert js == {"messaging_product": "whatsapp",
                  "contacts": [{"input": "14155550123",
                                "wa_id": "14155550123"}],
                  "messages": [{"id": wamid}]}, js
    s = srv.sent[-1]
    assert s["wamid"] == wamid and s["api"] == api and s["type"] == "text"
    assert s["body"]["text"]["body"] == "hi there" and s["time"] > 0
    assert s["phone_number_id"] == srv.phone_number_id
    # "+" kept in input, not in wa_id; type defaults to text; quoting
    quoted = {"messaging_product": "whatsapp", "to": "+14155550123",
              "context": {"message_id": wamid}, "text": {"body": "re"}}
    st, _, js = call("POST", url, quoted, auth)
    assert st == 200 and js["contacts"][0] == {"input": "+14155550123",
                                               "wa_id": "14155550123"}, js
    assert srv.sent[-1]["context_id"] == wamid
    assert js["messages"][0]["id"] != wamid
    for m in ({"messaging_product": "whatsapp", "to": "14155550123",
               "type": "image", "image": {"id": "1184467339823761",
                                          "caption": "box"}},
              {"messaging_product": "whatsapp", "to": "14155550123",
               "type": "reaction", "reaction": {"message_id": wamid,
                                                "emoji": "\U0001f44d"}},
              {"messaging_product": "whatsapp", "to": "14155550123",
               "type": "audio", "audio": {"id": "1", "voice": True}},
              {"messaging_product": "whatsapp", "to": "14155550123",
               "type": "location", "location": {"latitude": "37.44",
                                                "longitude": -122.16}},
              {"messaging_product": "whatsapp", "to": "14155550123",
               "type": "template", "template": {
                   "name": "hello_world", "language": {"code": "en_US"}}}):
        st, _, js = call("POST", url, m, auth)
        assert st == 200, (m, js)
    n_sent = len(srv.sent)
    # rejections: casing, missing field, unknown key, wrong values
    bad = [
        {"Messaging_Product": "whatsapp", "to": "14155550123",
         "type": "text", "text": {"body": "x"}},
        {"to": "14155550123", "type": "text", "text": {"body": "x"}},
        {"messaging_product": "whatsapp", "type": "text",
         "text": {"body": "x"}},
        text_msg(foo=1),
        text_msg(messaging_product="sms"),
        text_msg(recipient_type="group"),
        text_msg(to="+1 (415) 555-0123"),
        text_msg(""),
        text_msg("x" * 4097),
        {"messaging_product": "whatsapp", "to": "14155550123",
         "type": "text", "text": {"Body": "x"}},
        {"messaging_product": "whatsapp", "to": "14155550123",
         "type": "text"},
        {"messaging_product": "whatsapp", "to": "14155550123",
         "type": "image", "text": {"body": "x"}},
        {"messaging_product": "whatsapp", "to": "14155550123",
         "type": "text", "text": {"body": "x"}, "image": {"id": "1"}},
        {"messaging_product": "whatsapp", "to": "14155550123",
         "type": "sms", "sms": {"body": "x"}},
        {"messaging_product": "whatsapp", "to": "14155550123",
         "type": "image", "image": {"id": "1", "link": "https://h/x.jpg"}},
        {"messaging_product": "whatsapp", "to": "14155550123",
         "type": "reaction", "context": {"message_id": wamid},
         "reaction": {"message_id": wamid, "emoji": "x"}},
        {"messaging_product": "whatsapp", "to": "14155550123",
         "type": "audio", "audio": {"id": "1", "voice": "yes"}},
        {"messaging_product": "whatsapp", "to": "14155550123",
         "type": "location", "location": {"latitude": "north",
                                          "longitude": 1}},
        text_msg(context={"message_id": wamid, "from": "1"}),
        text_msg(context={}),
    ]
    for b in bad:
        st, _, js = call("POST", url, b, auth)
        assert graph_code(st, js) == 100, (b, js)
    assert "Messaging_Product" in call("POST", url, bad[0], auth)[2][
        "error"]["error_data"]["details"]
    st, _, js = call("POST", url, raw=json.dumps(text_msg()).encode(),
                     headers=dict(auth, **{"Content-Type": "text/plain"}))
    assert graph_code(st, js) == 100
    assert len(srv.sent) == n_sent
    # read receipt, with and without the typing indicator
    st, _, js = call("POST", url, read_msg(), auth)
    assert (st, js) == (200, {"success": True}), js
    r = srv.reads[-1]
    assert r["typing"] is True and r["message_id"].startswith("wamid.")
    st, _, js = call("POST", url, read_msg(typing=False), auth)
    assert (st, js) == (200, {"success": True}) and not srv.reads[-1][
        "typing"]
    for b in (read_msg(typing_indicator={"type": "audio"}),
              read_msg(typing_indicator={"type": "text", "x": 1}),
              read_msg(to="14155550123"), read_msg(status="delivered"),
              read_msg(message_id="ABGGFlA5FpafAgo6EhM"),
              {"messaging_product": "whatsapp", "status": "read"}):
        st, _, js = call("POST", url, b, auth)
        assert graph_code(st, js) == 100, (b, js)
    assert len(srv.reads) == 2 and len(srv.sent) == n_sent
    srv.require_wamid = False
    st, _, js = call("POST", url, read_msg(message_id="ABGGFlA5Fpa"), auth)
    assert st == 200 and srv.reads[-1]["message_id"] == "ABGGFlA5Fpa"
    srv.require_wamid = True
    st, _, js = call("GET", url, headers=auth)
    assert graph_code(st, js) == 100
    return wamid


def check_graph_knobs(url, auth, srv, throttle_code):
    """fail_next_send, throttle, hang and the per-second counts."""
    srv.fail_next_send(131056, retry_after=2)
    st, h, js = call("POST", url, text_msg(), auth)
    assert graph_code(st, js) == 131056 and h.get("Retry-After") == "2"
    assert js["error"]["message"].startswith("(#131056)")
    assert js["error"]["error_data"]["messaging_product"] == "whatsapp"
    srv.fail_next_send(131047, n=2)
    # an invalid request is still rejected as such and uses up nothing
    st, _, js = call("POST", url, text_msg(foo=1), auth)
    assert graph_code(st, js) == 100
    # read receipts are not sends unless asked
    assert call("POST", url, read_msg(), auth)[0] == 200
    for _ in range(2):
        st, _, js = call("POST", url, text_msg(), auth)
        assert graph_code(st, js) == 131047
    for code, status in ((130429, 400), (80007, 400), (131000, 500),
                         (2, 503)):
        srv.fail_next_send(code)
        st, _, js = call("POST", url, text_msg(), auth)
        assert graph_code(st, js, status) == code
    srv.fail_next_send(131026, status=404, message="custom", details="d")
    st, _, js = call("POST", url, text_msg(), auth)
    assert graph_code(st, js, 404) == 131026
    assert js["error"]["message"] == "custom"
    assert js["error"]["error_data"]["details"] == "d"
    assert [f["code"] for f in srv.send_failures] == [
        131056, 131047, 131047, 130429, 80007, 131000, 2, 131026]
    srv.throttle(1, retry_after=1)
    st, h, js = call("POST", url, text_msg(), auth)
    assert st == 429 and h.get("Retry-After") == "1", (st, h)
    assert throttle_code(js)
    # counts: accepted sends per second from the first one
    srv.clear()
    srv.state["sent"].clear()
    for _ in range(3):
        assert call("POST", url, text_msg(), auth)[0] == 200
    time.sleep(1.05)
    assert call("POST", url, text_msg(), auth)[0] == 200
    assert srv.sends_per_second(srv.phone_number_id) == [3, 1], \
        srv.sends_per_second()
    assert srv.sends_per_second("999") == []
    assert srv.max_per_window(window=1.0) == 3
    srv.fail_next_send(130429)
    assert call("POST", url, text_msg(), auth)[0] == 400
    assert sum(srv.sends_per_second(attempts=True)) == 5
    assert sum(srv.sends_per_second()) == 4
    # hang holds a send open
    srv.hang = True
    srv.hang_seconds = 5
    t0 = time.time()
    try:
        call("POST", url, text_msg(), auth, timeout=0.5)
        raise AssertionError("expected a timeout")
    except (socket.timeout, TimeoutError, urllib.error.URLError):
        pass
    assert time.time() - t0 < 3
    assert srv.requests[-1]["status"] is None
    srv.hang = False
    assert call("POST", url, text_msg(), auth)[0] == 200


def test_meta_send_and_read():
    with FakeMeta() as srv:
        url = "%s/v21.0/%s/messages" % (srv.api_url, DEFAULT_PHONE_NUMBER_ID)
        check_graph_messages(url, META_AUTH, srv, "meta")
        # token, phone number id, version
        for h in ({}, {"Authorization": "Bearer wrong"},
                  {"Authorization": DEFAULT_META_TOKEN},
                  {"X-API-Key": DEFAULT_META_TOKEN}):
            st, _, js = call("POST", url, text_msg(), h)
            assert graph_code(st, js, 401) == 190, js
            assert js["error"]["type"] == "OAuthException"
        st, _, js = call("POST", srv.api_url + "/v21.0/999/messages",
                         text_msg(), META_AUTH)
        assert graph_code(st, js) == 100
        for v in ("v20.0", "21.0", "latest"):
            st, _, js = call("POST", "%s/%s/%s/messages" % (
                srv.api_url, v, DEFAULT_PHONE_NUMBER_ID), text_msg(),
                META_AUTH)
            assert graph_code(st, js) == 100, v
        assert srv.requests[-1]["headers"]["authorization"] == \
            "Bearer " + DEFAULT_META_TOKEN
    with FakeMeta(versions=("v21.0", "v24.0"), phone_number_ids=("1", "2"),
                  access_tokens=("t1",)) as srv:
        st, _, js = call("POST", srv.api_url + "/v24.0/2/messages",
                         text_msg(), {"Authorization": "Bearer t1"})
        assert st == 200 and srv.sent[-1]["version"] == "v24.0"
        assert srv.sent[-1]["phone_number_id"] == "2"


def test_meta_knobs():
    with FakeMeta() as srv:
        url = "%s/v21.0/%s/messages" % (srv.api_url, DEFAULT_PHONE_NUMBER_ID)
        check_graph_knobs(url, META_AUTH, srv,
                          lambda js: js["error"]["code"] == 130429)
        srv.maintenance = True
        st, _, js = call("POST", url, text_msg(), META_AUTH)
        assert graph_code(st, js, 503) == 2
        srv.maintenance = False
        srv.fail_next_send(130429, phone_number_id="999")
        assert call("POST", url, text_msg(), META_AUTH)[0] == 200
        srv.fail_next_send(131016, reads=True)
        st, _, js = call("POST", url, read_msg(), META_AUTH)
        assert graph_code(st, js, 500) == 131016


def test_meta_media():
    data = bytes(range(256)) * 40
    with FakeMeta() as srv:
        srv.add_media("1184467339823761", data, "image/jpeg")
        srv.add_media("555", b"other", "audio/ogg", phone_number_id="42")
        base = srv.api_url + "/v21.0/"
        st, _, js = call("GET", base + "1184467339823761", headers=META_AUTH)
        assert st == 200, js
        assert set(js) == {"messaging_product", "url", "mime_type", "sha256",
                           "file_size", "id"}, js
        assert js["sha256"] == hashlib.sha256(data).hexdigest()
        assert js["file_size"] == str(len(data)) and js["id"] == \
            "1184467339823761" and js["mime_type"] == "image/jpeg"
        assert js["url"].startswith(srv.url + "/media-download/")
        st, h, body = fetch("GET", js["url"], headers=META_AUTH)
        assert st == 200 and body == data and h["Content-Type"] == \
            "image/jpeg"
        st, _, body = fetch("GET", js["url"])
        assert st == 401 and json.loads(body)["error"]["code"] == 190
        st, _, body = fetch("GET", js["url"],
                            headers={"Authorization": "Bearer nope"})
        assert st == 401
        st, _, _ = fetch("GET", js["url"].replace("token=", "token=x"),
                         headers=META_AUTH)
        assert st == 404
        # the URL lives 5 minutes
        srv.advance_clock(301)
        assert fetch("GET", js["url"], headers=META_AUTH)[0] == 404
        st, _, js = call("GET", base + "1184467339823761", headers=META_AUTH)
        assert fetch("GET", js["url"], headers=META_AUTH)[2] == data
        # phone_number_id is optional but must match when given
        st, _, js = call("GET", base + "555?phone_number_id=42",
                         headers=META_AUTH)
        assert st == 200
        st, _, js = call("GET", base + "555?phone_number_id=43",
                         headers=META_AUTH)
        assert graph_code(st, js) == 100
        st, _, js = call("GET", base + "404404", headers=META_AUTH)
        assert graph_code(st, js) == 100
        st, _, js = call("GET", base + "555")
        assert graph_code(st, js, 401) == 190
        st, _, js = call("GET", srv.api_url + "/v20.0/555",
                         headers=META_AUTH)
        assert graph_code(st, js) == 100
        # a declared hash that does not match the bytes, and integer sizes
        srv.add_media("666", b"abc", "text/plain", sha256="0" * 64)
        srv.file_size_as_int = True
        st, _, js = call("GET", base + "666", headers=META_AUTH)
        assert js["sha256"] == "0" * 64 and js["file_size"] == 3


def test_meta_standalone():
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_meta.py"),
                          "--port", "0", "--seconds", "2"],
                         stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().strip()
        assert line.startswith("listening http://127.0.0.1:"), line
        st, _, js = call("POST", "%s/v21.0/%s/messages" % (
            line.split()[1], DEFAULT_PHONE_NUMBER_ID), text_msg(), META_AUTH)
        assert st == 200 and js["messages"][0]["id"].startswith("wamid.")
    finally:
        p.wait(15)
    assert p.returncode == 0


def test_kapso_meta_send_and_read():
    with FakeKapso() as srv:
        assert srv.meta_url == srv.url + "/meta/whatsapp"
        url = "%s/v24.0/%s/messages" % (srv.meta_url, srv.phone_number_id)
        check_graph_messages(url, KAPSO_KEY, srv, "kapso")
        for h in ({}, {"X-API-Key": "wrong"},
                  {"Authorization": "Bearer " + DEFAULT_API_KEY}):
            st, _, js = call("POST", url, text_msg(), h)
            assert (st, js) == (401, {"error": "Unauthorized"}), (h, js)
        st, _, js = call("POST", srv.meta_url + "/v24.0/999/messages",
                         text_msg(), KAPSO_KEY)
        assert st == 404 and "error" in js
        st, _, js = call("POST", "%s/v21.0/%s/messages" % (
            srv.meta_url, srv.phone_number_id), text_msg(), KAPSO_KEY)
        assert graph_code(st, js) == 100
        # the management API is untouched
        st, _, js = call("GET", "%s/whatsapp_configs/%s/whatsapp_webhooks" % (
            srv.api_url, srv.config_id), headers=KAPSO_KEY)
        assert st == 200 and js["data"] == []


def test_kapso_meta_knobs():
    with FakeKapso() as srv:
        url = "%s/v24.0/%s/messages" % (srv.meta_url, srv.phone_number_id)
        check_graph_knobs(url, KAPSO_KEY, srv,
                          lambda js: js == {"error": "Too many requests"})


def test_kapso_meta_media():
    data = b"OggS" + bytes(range(200))
    with FakeKapso(phone_number_ids=("647015955153740", "2")) as srv:
        srv.add_media("1184467339823761", data, "audio/ogg")
        base = srv.meta_url + "/v24.0/1184467339823761"
        q = "?phone_number_id=647015955153740"
        st, _, js = call("GET", base, headers=KAPSO_KEY)
        assert st == 400 and "phone_number_id" in js["error"], js
        st, _, js = call("GET", base + q)
        assert (st, js) == (401, {"error": "Unauthorized"})
        st, _, js = call("GET", base + "?phone_number_id=999",
                         headers=KAPSO_KEY)
        assert st == 404
        st, _, js = call("GET", base + "?phone_number_id=2",
                         headers=KAPSO_KEY)
        assert graph_code(st, js) == 100
        st, _, js = call("GET", base + q, headers=KAPSO_KEY)
        assert st == 200, js
        assert js["sha256"] == hashlib.sha256(data).hexdigest()
        assert js["file_size"] == str(len(data))
        assert js["mime_type"] == "audio/ogg"
        assert js["download_url"].startswith(
            srv.url + "/meta/whatsapp/media_download?token=")
        assert js["download_url_expires_at"].endswith("Z")
        # download_url needs no key; url is Meta's and needs Meta's token
        st, h, body = fetch("GET", js["download_url"], headers={})
        assert st == 200 and body == data and h["Content-Type"] == \
            "audio/ogg"
        st, _, body = fetch("GET", js["url"], headers=KAPSO_KEY)
        assert st == 401
        # the download token lives 4 minutes
        srv.advance_clock(239)
        assert fetch("GET", js["download_url"])[0] == 200
        srv.advance_clock(2)
        st, _, body = fetch("GET", js["download_url"])
        assert st == 401 and json.loads(body)["error"]
        st, _, js = call("GET", srv.meta_url + "/v24.0/404404" + q,
                         headers=KAPSO_KEY)
        assert graph_code(st, js) == 100
