"""walua.whatsapp, black-box (README, Handler scripts and the Lua API):
replies, sends, read receipts and media on Insider One, Kapso and Meta;
the once-per-event send journal across retries, replays and kill -9; the
pace per business number; provider throttling and errors.

Each test runs a real daemon whose handler uses walua.whatsapp against the
strict fakes of tests/fakes (FakeInsider, FakeKapso's Meta-compatible API,
FakeMeta), which record every request they answer; the tests assert what
the fakes received and what the handler logged.
"""
import base64
import hashlib
import hmac
import json
import shutil
import time
import uuid
from datetime import datetime

from harness import TOKEN, Daemon, lua_str, metric, text_body, walua

# run again with each daemon on PostgreSQL (tests/run.py): the send
# journal there
PG_AGAIN = True
from fake_insider import FakeInsider, DEFAULT_AUTH_KEY
from fake_kapso import (FakeKapso, DEFAULT_API_KEY,
                        DEFAULT_KAPSO_PHONE_NUMBER_ID)
from fake_meta import FakeMeta, DEFAULT_META_TOKEN, DEFAULT_PHONE_NUMBER_ID

KAPSO_SECRET = "kapso-webhook-secret-13579bdf"
SECRETS = (DEFAULT_META_TOKEN, DEFAULT_API_KEY, DEFAULT_AUTH_KEY,
           KAPSO_SECRET)
USER = "905321234567"
KAPSO_USER = "14155550123"
OTHER_NUMBER = "106540352299999"

ENDPOINTS = ('{ { path = "/webhooks/insider", provider = "insider",\n'
             '    auth = { type = "bearer", token = %(tok)s } },\n'
             '  { path = "/webhooks/kapso", provider = "kapso",\n'
             '    auth = { type = "kapso", secret = %(ks)s } },\n'
             '  { path = "/webhooks/meta", provider = "meta",\n'
             '    auth = { type = "bearer", token = %(tok)s } } }')

# One handler for every test: what it does is chosen by the message text.
HANDLER = r'''
local wa = require "walua.whatsapp"
local log = require "walua.log"
local walua = require "walua"
local store = require "walua.store"

local function e(err)
	if err == nil then return nil end
	return { err = tostring(err), code = err.code, status = err.status }
end

local function logged(what, ev, id, err, more)
	local f = { provider = ev.provider, event = ev.id, attempt = ev.attempt,
	    id = id }
	for k, v in pairs(e(err) or {}) do f[k] = v end
	for k, v in pairs(more or {}) do f[k] = v end
	log.info(what, f)
end

return function(ev)
	if ev.kind ~= "message" then return end
	local text = ev.text or ""
	if text:match("^hi") then
		local id, err = wa.reply(ev, "echo: " .. text, { quote = true })
		logged("replied", ev, id, err)
		local ok, rerr = wa.mark_read(ev, { typing = true })
		logged("read", ev, ok, rerr)
		local sid, serr = wa.send{ provider = ev.provider,
		    phone_number_id = ev.phone_number_id,
		    from = ev.display_phone_number, to = ev.from,
		    message = { type = "text", text = { body = "reminder",
		    preview_url = false } } }
		logged("sent", ev, sid, serr)
	elseif text == "send then raise" then
		local id, err = wa.reply(ev, "only once")
		logged("replied", ev, id, err)
		if not store.get("raised " .. ev.id) then
			store.set("raised " .. ev.id, "yes")
			error("failed after the send")
		end
	elseif text == "send then stall" then
		local id, err = wa.reply(ev, "only once, even after kill -9")
		logged("replied", ev, id, err)
		if not store.get("stalled") then
			store.set("stalled", "yes")
			walua.sleep(30000)
		end
		log.info("stall over", { event = ev.id })
	elseif text:match("^burst") then
		local n, ok = tonumber(text:match("%d+")), 0
		for i = 1, n do
			local id, err = wa.send{ provider = ev.provider,
			    phone_number_id = ev.phone_number_id, to = ev.from,
			    text = "burst " .. i }
			if id then ok = ok + 1 else logged("burst error", ev, nil, err) end
		end
		log.info("burst done", { event = ev.id, ok = ok })
	elseif text == "quick" then
		local id, err = wa.reply(ev, "quick answer")
		logged("replied", ev, id, err)
	elseif text == "throttled" or text == "window closed" then
		log.info("calling", { event = ev.id })
		local id, err = wa.reply(ev, "after a wait")
		logged("replied", ev, id, err)
	elseif ev.media then
		local m, err = wa.media(ev)
		logged("media", ev, nil, err, m and { size = #m.body,
		    sha256 = m.sha256, mime_type = m.mime_type })
	end
end
'''


# delivering events ---------------------------------------------------------
def meta_body(text, message_id, pid=DEFAULT_PHONE_NUMBER_ID, message=None):
    msg = message or {"type": "text", "text": {"body": text}}
    msg = dict(msg, **{"from": USER, "id": message_id,
                       "timestamp": "1749416383"})
    return json.dumps({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881",
                             "phone_number_id": pid},
                "contacts": [{"profile": {"name": "Ayşe"}, "wa_id": USER}],
                "messages": [msg]}}]}]})


def kapso_body(text, message_id, message=None):
    msg = message or {"type": "text", "text": {"body": text}}
    msg = dict(msg, **{"from": KAPSO_USER, "id": message_id,
                       "timestamp": "1761661501"})
    return json.dumps({
        "message": msg,
        "conversation": {"id": "3f2b8c1e-7a4d-4b9e-9c2f-5d6e7f8a9b0c",
                         "phone_number": "+" + KAPSO_USER,
                         "status": "active",
                         "phone_number_id": DEFAULT_KAPSO_PHONE_NUMBER_ID},
        "is_new_conversation": False,
        "phone_number_id": DEFAULT_KAPSO_PHONE_NUMBER_ID})


def post_meta(d, body):
    return d.deliver(body, path="/webhooks/meta")


def post_kapso(d, body):
    raw = body.encode()
    sig = hmac.new(KAPSO_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    st, _, resp = d.request("POST", "/webhooks/kapso", raw, {
        "Content-Type": "application/json",
        "X-Webhook-Event": "whatsapp.message.received",
        "X-Idempotency-Key": str(uuid.uuid4()),
        "X-Webhook-Payload-Version": "v2",
        "X-Webhook-Signature": sig})
    assert st == 200, (st, resp)


def conf(meta=None, kapso=None, insider=None, extra=""):
    """meta, kapso, insider: fakes (or their URLs) to send to."""
    parts = []
    if meta is not None:
        parts.append("meta = { access_token = %s, api_url = %s }," % (
            lua_str(DEFAULT_META_TOKEN),
            lua_str(getattr(meta, "api_url", meta))))
    if kapso is not None:
        parts.append("kapso = { api_key = %s, api_url = %s, meta_url = %s },"
                     % (lua_str(DEFAULT_API_KEY), lua_str(kapso.api_url),
                        lua_str(kapso.meta_url)))
    if insider is not None:
        parts.append("insider = { auth_key = %s, api_url = %s }," % (
            lua_str(DEFAULT_AUTH_KEY), lua_str(insider.api_url)))
    parts.append(extra)
    return "\n".join(parts)


def daemon(extra, workers=1, env=None):
    eps = ENDPOINTS % {"tok": lua_str(TOKEN), "ks": lua_str(KAPSO_SECRET)}
    return Daemon(handlers={"bot.lua": HANDLER}, extra=extra,
                  endpoints=eps, workers=workers, env=env)


def one(d, msg, provider=None, timeout=10, count=1):
    lines = d.wait_log(lambda l: l.get("msg") == msg and (
        provider is None or l.get("provider") == provider), count=count,
        timeout=timeout)
    return lines[-1] if count == 1 else lines


def ts_of(line):
    return datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def no_secrets(text, what):
    for s in SECRETS:
        assert s not in text, "%s shows the secret %r" % (what, s[:6])


def inbox(d, *args):
    p = walua("run", "-c", d.conf, "inbox", *args, timeout=30)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


def wait_done(d, ev, timeout=10):
    end = time.time() + timeout
    while True:
        state = json.loads(inbox(d, "show", ev, "--json").stdout)["state"]
        if state == "done":
            return
        assert time.time() < end, "event %s is still %s" % (ev, state)
        time.sleep(0.05)


# tests -----------------------------------------------------------------------
def test_one_handler_replies_on_every_provider():
    # the Insider event came to 908502123456: the reply goes from it
    with FakeInsider(phones=("908502123456",)) as ins, FakeKapso() as kap, \
            FakeMeta() as meta, \
            daemon(conf(meta, kap, ins)) as d:
        d.deliver(text_body("hi insider", "wamid.WAINS1"))
        post_kapso(d, kapso_body("hi kapso", "wamid.WAKAP1"))
        post_meta(d, meta_body("hi meta", "wamid.WAMETA1"))
        for p in ("insider", "kapso", "meta"):
            one(d, "sent", p)

        # Meta: the Graph API, Bearer token, Meta's message object
        r = meta.requests_to("/v21.0/%s/messages" % DEFAULT_PHONE_NUMBER_ID,
                             "POST")
        assert len(r) == 3, [x["json"] for x in r]
        reply, read, send = (x for x in r)
        for x in r:
            assert x["status"] == 200, x
            assert x["headers"]["authorization"] == \
                "Bearer " + DEFAULT_META_TOKEN
            assert x["headers"]["content-type"].startswith(
                "application/json"), x["headers"]
        assert reply["json"] == {
            "messaging_product": "whatsapp", "recipient_type": "individual",
            "to": USER, "type": "text", "text": {"body": "echo: hi meta"},
            "context": {"message_id": "wamid.WAMETA1"}}, reply["json"]
        assert read["json"] == {
            "messaging_product": "whatsapp", "status": "read",
            "message_id": "wamid.WAMETA1",
            "typing_indicator": {"type": "text"}}, read["json"]
        assert send["json"]["text"] == {"body": "reminder",
                                        "preview_url": False}, send["json"]
        sent = meta.sent
        assert one(d, "replied", "meta")["id"] == sent[0]["wamid"]
        assert one(d, "read", "meta")["id"] is True
        assert one(d, "sent", "meta")["id"] == sent[1]["wamid"]

        # Kapso: its Meta-compatible API with X-API-Key, no Bearer
        r = kap.requests_to("/meta/whatsapp/v24.0/%s/messages"
                            % DEFAULT_KAPSO_PHONE_NUMBER_ID, "POST")
        assert len(r) == 3, [x["json"] for x in r]
        for x in r:
            assert x["status"] == 200, x
            assert x["headers"]["x-api-key"] == DEFAULT_API_KEY
            assert "authorization" not in x["headers"], x["headers"]
        assert r[0]["json"] == {
            "messaging_product": "whatsapp", "recipient_type": "individual",
            "to": KAPSO_USER, "type": "text",
            "text": {"body": "echo: hi kapso"},
            "context": {"message_id": "wamid.WAKAP1"}}, r[0]["json"]
        assert r[1]["json"]["status"] == "read", r[1]["json"]
        assert one(d, "replied", "kapso")["id"] == kap.sent[0]["wamid"]
        assert one(d, "sent", "kapso")["id"] == kap.sent[1]["wamid"]

        # Insider One: its v1 send API with the auth key; no read receipt
        r = ins.requests_to("/v1/conversational/send", "POST")
        assert len(r) == 2, [x["json"] for x in r]
        assert r[0]["headers"]["x-ins-auth-key"] == DEFAULT_AUTH_KEY
        (item,) = r[0]["json"]["messages"]
        assert item["phoneNumber"] == "+" + USER, item
        assert item["message"]["text"] == {"body": "echo: hi insider"}, item
        assert r[0]["json"]["from"] == "+908502123456", r[0]["json"]
        line = one(d, "replied", "insider")
        assert line.get("id") == ins.state["sent"][0]["key"], line
        read = one(d, "read", "insider")
        assert read.get("id") is None and "Insider One" in read["err"], read
        line = one(d, "sent", "insider")
        assert len(ins.state["sent"]) == 2, (line, r[1])
        assert line.get("id") == ins.state["sent"][1]["key"], line

        assert metric(d, "walua_sends_total",
                      'provider="meta",result="ok"') == 2
        ev = one(d, "replied", "meta")["event"]
        show = inbox(d, "show", ev)
        assert sent[0]["wamid"] in show.stdout, show.stdout
        shown = json.loads(inbox(d, "show", ev, "--json").stdout)
        assert [s["message_id"] for s in shown["sends"]] == \
            [sent[0]["wamid"], sent[1]["wamid"]], shown["sends"]
        no_secrets(show.stdout + json.dumps(shown), "inbox show")
    no_secrets(d.log_text(), "the log")


def test_a_send_is_made_once_across_retries_and_replays():
    with FakeMeta() as meta, daemon(conf(meta, extra=(
            "limits = { retries = 2, retry_backoff_ms = { 100 } },"))) as d:
        post_meta(d, meta_body("send then raise", "wamid.WAONCE1"))
        first, second = one(d, "replied", count=2)
        assert (first["attempt"], second["attempt"]) == (1, 2), (first,
                                                                 second)
        assert len(meta.sent) == 1, meta.sent
        assert first["id"] == second["id"] == meta.sent[0]["wamid"]
        one(d, "send already made in an earlier run; not sent again")
        assert metric(d, "walua_sends_total",
                      'provider="meta",result="journaled"') == 1

        ev = first["event"]
        # replay without --resend: the journal answers, nothing is sent
        wait_done(d, ev)
        inbox(d, "replay", ev)
        one(d, "replied", count=3)
        time.sleep(0.3)
        assert len(meta.sent) == 1, meta.sent
        # --resend: the journal is dropped, the reply goes out again
        wait_done(d, ev)
        inbox(d, "replay", ev, "--resend")
        fourth = one(d, "replied", count=4)[-1]
        assert len(meta.sent) == 2, meta.sent
        assert fourth["id"] == meta.sent[1]["wamid"] != meta.sent[0]["wamid"]
        shown = json.loads(inbox(d, "show", ev, "--json").stdout)
        assert [s["message_id"] for s in shown["sends"]] == \
            [meta.sent[1]["wamid"]], shown["sends"]
    no_secrets(d.log_text(), "the log")


def test_kill9_after_the_answer_does_not_send_again():
    with FakeMeta() as meta, daemon(conf(meta, extra=(
            "limits = { handler_timeout_ms = 60000 },"))) as d:
        post_meta(d, meta_body("send then stall", "wamid.WAKILL1"))
        first = one(d, "replied")
        assert first["id"] == meta.sent[0]["wamid"], first
        # the fake answered and the journal holds the id; the handler is
        # still running, so the event is not marked done
        d.kill9()
        d.restart()
        second = one(d, "replied", count=2)[-1]
        assert second["event"] == first["event"], (first, second)
        assert second["id"] == first["id"], (first, second)
        one(d, "stall over")
        time.sleep(0.3)
        assert len(meta.sent) == 1, meta.sent
        one(d, "send already made in an earlier run; not sent again")


def test_pace_per_number_shared_by_concurrent_events():
    with FakeMeta(phone_number_ids=(DEFAULT_PHONE_NUMBER_ID,
                                    OTHER_NUMBER)) as meta, \
            daemon(conf(meta, extra=(
                "outbound = { rate_per_number = 100 },\n"
                "limits = { handler_timeout_ms = 30000 },")),
                workers=2) as d:
        t0 = time.time()
        for i in range(50):
            post_meta(d, meta_body("burst 10", "wamid.WABURST%02d" % i))
        # while the first number works through its 500, the other answers
        time.sleep(1.0)
        posted = time.time()
        post_meta(d, meta_body("quick", "wamid.WAQUICK1", pid=OTHER_NUMBER))
        quick = meta.wait_for(lambda r: r.get("phone_number_id") ==
                              OTHER_NUMBER, timeout=10)[0]
        backlog = 500 - len([s for s in meta.sent
                             if s["phone_number_id"] != OTHER_NUMBER])
        other_took = quick["time"] - posted
        one(d, "burst done", count=50, timeout=30)
        took = time.time() - t0
        a = [s for s in meta.sent if s["phone_number_id"] ==
             DEFAULT_PHONE_NUMBER_ID]
        peak = meta.max_per_window(DEFAULT_PHONE_NUMBER_ID, 1.0)
        span = a[-1]["time"] - a[0]["time"]
        print("pace: 500 sends in %.2f s (%.1f/s), at most %d in any 1 s; "
              "the other number answered in %.3f s with %d still queued"
              % (span, 499 / span, peak, other_took, backlog))
        assert len(a) == 500, len(a)
        assert not d.find(lambda l: l.get("msg") == "burst error")
        assert peak <= 110, meta.sends_per_second(DEFAULT_PHONE_NUMBER_ID)
        # the pace holds them to 100/s, and nothing else holds them back
        assert 4.4 <= span < 7, span
        assert backlog > 100, backlog
        assert other_took < 0.5, other_took
        assert took < 25, took


def test_throttled_then_ok_and_window_closed():
    with FakeMeta() as meta, daemon(conf(meta)) as d:
        meta.throttle(1, retry_after=1)
        post_meta(d, meta_body("throttled", "wamid.WATHR1"))
        start = one(d, "calling")
        done = one(d, "replied")
        waited = ts_of(done) - ts_of(start)
        assert 0.9 <= waited < 3, waited
        assert done["id"] == meta.sent[0]["wamid"], done
        assert len(meta.sent) == 1
        tries = meta.requests_to("/v21.0/%s/messages" %
                                 DEFAULT_PHONE_NUMBER_ID, "POST")
        assert [t["status"] for t in tries] == [429, 200], tries
        assert metric(d, "walua_outbound_throttled_total",
                      'provider="meta",code="130429"') == 1

        meta.fail_next_send(131047)
        post_meta(d, meta_body("window closed", "wamid.WAWIN1"))
        err = one(d, "replied", count=2)[-1]
        assert err.get("id") is None and err["code"] == 131047, err
        assert err["status"] == 400, err
        time.sleep(0.3)
        tries = meta.requests_to("/v21.0/%s/messages" %
                                 DEFAULT_PHONE_NUMBER_ID, "POST")
        assert len(tries) == 3, [t["status"] for t in tries]
        assert len(meta.sent) == 1
    no_secrets(d.log_text(), "the log")


def b64(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def image(media_id, sha256):
    return {"type": "image", "image": {"mime_type": "image/jpeg",
                                       "sha256": sha256, "id": media_id}}


def test_media_download_checked_and_capped():
    small = bytes(range(256)) * 40
    big = b"\xff" * 200000
    with FakeMeta() as meta, FakeKapso() as kap, daemon(conf(
            meta, kap, extra="outbound = { max_media_bytes = 150000 },")) \
            as d:
        meta.add_media("9001", small, "image/jpeg")
        meta.add_media("9002", small, "image/jpeg")
        meta.add_media("9003", big, "image/jpeg")
        kap.add_media("9004", small, "image/png",
                      phone_number_id=DEFAULT_KAPSO_PHONE_NUMBER_ID)
        post_meta(d, meta_body(None, "wamid.WAMED1",
                               message=image("9001", b64(small))))
        ok = one(d, "media")
        assert ok.get("err") is None, ok
        assert ok["size"] == len(small), ok
        assert ok["sha256"] == hashlib.sha256(small).hexdigest(), ok
        assert ok["mime_type"] == "image/jpeg", ok

        post_meta(d, meta_body(None, "wamid.WAMED2",
                               message=image("9002", b64(b"other bytes"))))
        bad = one(d, "media", count=2)[-1]
        assert "sha256" in bad["err"] and "size" not in bad, bad

        post_meta(d, meta_body(None, "wamid.WAMED3",
                               message=image("9003", b64(big))))
        over = one(d, "media", count=3)[-1]
        assert over["err"] and "size" not in over, over

        post_kapso(d, kapso_body(None, "wamid.WAMED4", message={
            "type": "image", "image": {"id": "9004"}}))
        k = one(d, "media", count=4)[-1]
        assert k.get("err") is None and k["size"] == len(small), k
        assert k["sha256"] == hashlib.sha256(small).hexdigest(), k
        # Meta's download took the same token; Kapso's took none
        dl = [r for r in meta.requests if r["path"].startswith(
            "/media-download/")]
        assert dl and all(r["headers"]["authorization"] ==
                          "Bearer " + DEFAULT_META_TOKEN for r in dl), dl
    print("media: sha256 checked, over-size refused: %s" % over["err"])
    no_secrets(d.log_text(), "the log")



def test_check_warns_of_an_endpoint_that_cannot_be_answered():
    bare, armed = daemon(""), daemon(conf("http://127.0.0.1:9"))
    try:
        p = walua("check", "-c", bare.conf)
        assert p.returncode == 0, (p.stdout, p.stderr)
        for ep, provider in (("/webhooks/insider", "insider"),
                             ("/webhooks/kapso", "kapso"),
                             ("/webhooks/meta", "meta")):
            assert any(l.startswith("warning: ") and ep in l and
                       provider in l and "no send credentials" in l
                       for l in p.stderr.splitlines()), p.stderr
        # meta.access_token set: only the other two are warned of
        p = walua("check", "-c", armed.conf)
        assert p.returncode == 0, (p.stdout, p.stderr)
        assert "/webhooks/meta" not in p.stderr, p.stderr
        assert "/webhooks/kapso" in p.stderr, p.stderr
        no_secrets(p.stdout + p.stderr, "walua check")
    finally:
        shutil.rmtree(bare.dir, ignore_errors=True)
        shutil.rmtree(armed.dir, ignore_errors=True)
