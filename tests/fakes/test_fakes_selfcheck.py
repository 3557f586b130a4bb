"""Self-test of the fake provider servers (fake_insider.py, fake_kapso.py):
a few happy paths and the rejections that bindings must not trigger."""
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


def call(method, url, body=None, headers=None, raw=None, timeout=10):
    """(status, headers, parsed JSON or None) without raising on 4xx/5xx."""
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = raw if raw is not None else (
        None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, hdrs, text = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, text = e.code, dict(e.headers), e.read()
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
    finally:
        p.wait(15)
    assert p.returncode == 0
