"""README, HTTP answers, for bearer endpoints: every answer the daemon gives,
what its body says, and what reached Lua (nothing, for every refusal).

"Nothing reached Lua" is proved without sleeping: after the refusals a
marker event is delivered on the same conversation (and the refusal daemons
run one worker, so the inbox is handled in order); once the marker's
"handled" line is in the log, anything stored before it would have been
handled already, so the only "handled" lines must be the expected ones.
"""
import http.client
import itertools
import json
import re
import signal
import socket
import time

from harness import Daemon, TOKEN, fixture, text_body

EP = "/webhooks/insider"
META_EP = "/webhooks/meta-bearer"
MARKER_TEXT = "settle-marker"

_ids = itertools.count(1)


def new_id(tag="T"):
    return "wamid.HTTP%s%d" % (tag, next(_ids))


def is_handled(l):
    return l.get("msg") == "handled"


def handled(d):
    """Every "handled" line except the markers of settle()."""
    return [l for l in d.find(is_handled) if l.get("text") != MARKER_TEXT]


def settle(d):
    """Deliver a marker event, wait until it is handled; return every other
    "handled" line seen so far."""
    m = new_id("MARK")
    resp = d.deliver(text_body(MARKER_TEXT, m))
    assert resp == {"ok": True, "events": 1, "duplicates": 0}, resp
    d.wait_log(lambda l: is_handled(l) and l.get("message_id") == m)
    return handled(d)


def assert_nothing_handled(d):
    extra = settle(d)
    assert extra == [], "refused requests reached Lua: %r" % extra


def json_of(body):
    try:
        return json.loads(body)
    except ValueError:
        raise AssertionError("body is not JSON: %r" % body[:300])


def assert_refusal(answer, status, what=""):
    """status, and a JSON body {"ok":false,"error":"<non-empty>"}."""
    st, headers, body = answer
    assert st == status, "%s: expected %d, got %d %r" % (what, status, st,
                                                         body[:300])
    j = json_of(body)
    assert isinstance(j, dict) and j.get("ok") is False, (what, j)
    assert isinstance(j.get("error"), str) and j["error"], (what, j)
    return j


def assert_probe(answer, what=""):
    st, headers, body = answer
    assert st == 200, (what, st, body[:300])
    assert json_of(body) == {"ok": True, "events": 0}, (what, body)


# metrics ---------------------------------------------------------------
METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metrics(d):
    """{(name, ((label, value), ...sorted)): float} of GET /metrics."""
    st, headers, body = d.admin_request("GET", "/metrics")
    assert st == 200, (st, body[:300])
    out = {}
    for line in body.decode("utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        assert m, "not a Prometheus sample line: %r" % line
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(ms, name, **labels):
    return ms.get((name, tuple(sorted(labels.items()))), 0.0)


def metric_sum(ms, name, **labels):
    """Sum of every sample of name whose labels include the given ones."""
    want = set(labels.items())
    return sum(v for (n, ls), v in ms.items()
               if n == name and want <= set(ls))


def wait_metrics(d, pred, timeout=5):
    end = time.time() + timeout
    while True:
        ms = metrics(d)
        if pred(ms):
            return ms
        if time.time() > end:
            raise AssertionError("metrics never matched:\n%r" % ms)
        time.sleep(0.05)


# raw HTTP ----------------------------------------------------------------
def raw_exchange(d, data, timeout=5):
    """Write the request bytes as they are; read one response (the request
    should carry Connection: close).  Returns (status, headers, body)."""
    s = socket.create_connection(("127.0.0.1", d.port), timeout=timeout)
    out = b""
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass            # the server may answer before reading it all
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            out += b
            head, sep, rest = out.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
                if m and len(rest) >= int(m.group(1)):
                    break
    finally:
        s.close()
    head, sep, body = out.partition(b"\r\n\r\n")
    assert sep, "no complete HTTP answer: %r" % out[:500]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def raw_post(d, path, header_lines, body=b""):
    req = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
           "%sConnection: close\r\n\r\n" % (
               path, TOKEN, "".join(h + "\r\n" for h in header_lines)))
    return raw_exchange(d, req.encode() + body)


def chunked(body, size):
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"


def json_of_size(n, tag="x"):
    """A JSON object (not recognised by any provider) of exactly n bytes."""
    head = ('{"%s":"' % tag).encode()
    body = head + b"y" * (n - len(head) - 2) + b'"}'
    assert len(body) == n
    json.loads(body)
    return body


# tests -----------------------------------------------------------------
def test_authenticated_post_is_acknowledged_and_handled():
    with Daemon() as d:
        m = new_id()
        st, headers, body = d.post(EP, text_body("hello there", m),
                                   token=TOKEN)
        assert st == 200, (st, body)
        assert headers.get("content-type", "").startswith(
            "application/json"), headers
        assert json_of(body) == {"ok": True, "events": 1,
                                 "duplicates": 0}, body
        l = d.wait_log(is_handled)[0]
        assert l["message_id"] == m, l
        assert l["text"] == "hello there", l
        assert (l["kind"], l["type"]) == ("message", "text"), l
        assert (l["provider"], l["endpoint"]) == ("insider", EP), l
        assert l["event"] == l["id"] and l["id"], l
        assert l["conversation"] == "106540352242922:905321234567", l
        assert l["attempt"] == 1, l


def test_meta_batch_is_one_event_per_message():
    raw = fixture("meta/multi.json")
    msgs = [m for e in json.loads(raw)["entry"] for c in e["changes"]
            for m in c["value"]["messages"]]
    assert len(msgs) == 4
    with Daemon() as d:
        st, _, body = d.post(META_EP, raw, token=TOKEN)
        assert st == 200, (st, body)
        assert json_of(body) == {"ok": True, "events": 4,
                                 "duplicates": 0}, body
        lines = d.wait_log(is_handled, count=4)
        by_id = {l["message_id"]: l for l in lines}
        assert set(by_id) == {m["id"] for m in msgs}, lines
        assert len({l["id"] for l in lines}) == 4, "event ids not unique"
        for m in msgs:
            l = by_id[m["id"]]
            assert (l["provider"], l["endpoint"]) == ("meta", META_EP), l
            assert l["kind"] == "message" and l["type"] == m["type"], l
        assert by_id[msgs[0]["id"]]["text"] == "Hi"
        assert by_id[msgs[3]["id"]]["text"] == "Stop promotions"


def test_empty_bodies_are_probes_with_or_without_auth():
    with Daemon(workers=1) as d:
        for path in (EP, META_EP):
            for body in (b"", b"{}", b" { } "):
                for token in (None, TOKEN, "wrong-token"):
                    assert_probe(d.post(path, body, token=token),
                                 "%s %r token=%s" % (path, body, token))
        assert_nothing_handled(d)
        ms = metrics(d)
        assert metric_sum(ms, "walua_events_acked_total") == 1, ms  # marker


def test_get_and_head_on_endpoint_are_probes():
    with Daemon(workers=1) as d:
        for token in (None, TOKEN, "wrong-token"):
            h = {"Authorization": "Bearer " + token} if token else {}
            assert_probe(d.request("GET", EP, headers=h), "GET %s" % token)
            st, _, body = d.request("HEAD", EP, headers=h)
            assert st == 200, ("HEAD", token, st)
            assert body == b"", ("HEAD has a body", body)
        assert_nothing_handled(d)


def test_auth_refusals_and_case_insensitive_scheme():
    body = text_body("should not arrive", new_id())
    refusals = [
        ("missing", {}),
        ("wrong", {"Authorization": "Bearer wrong-token"}),
        ("prefix", {"Authorization": "Bearer " + TOKEN[:-1]}),
        ("longer", {"Authorization": "Bearer " + TOKEN + "x"}),
        ("empty", {"Authorization": "Bearer "}),
        ("basic", {"Authorization": "Basic dXNlcjpwYXNz"}),
        ("basic-token", {"Authorization": "Basic " + TOKEN}),
        ("bare-token", {"Authorization": TOKEN}),
    ]
    with Daemon(workers=1) as d:
        for what, h in refusals:
            st, headers, resp = d.post(EP, body, headers=h)
            assert_refusal((st, headers, resp), 401, what)
            assert headers.get("www-authenticate", "").lower().startswith(
                "bearer"), (what, headers)
        assert_nothing_handled(d)

        ids = []
        for scheme in ("bearer", "BEARER", "BeArEr"):
            m = new_id()
            ids.append(m)
            st, _, resp = d.post(EP, text_body("scheme " + scheme, m),
                                 headers={"Authorization":
                                          scheme + " " + TOKEN})
            assert st == 200, (scheme, st, resp)
            assert json_of(resp) == {"ok": True, "events": 1,
                                     "duplicates": 0}, (scheme, resp)
        seen = [l["message_id"] for l in settle(d)]
        assert seen == ids, seen

        ms = metrics(d)
        n = metric_sum(ms, "walua_auth_failures_total", endpoint=EP)
        assert n == len(refusals), (n, ms)
        refused = d.find(lambda l: l.get("msg") == "request refused"
                         and str(l.get("status")) == "401")
        assert len(refused) == len(refusals), refused
        assert all(l.get("endpoint") == EP for l in refused), refused
        assert TOKEN not in d.log_text(), "the bearer token was logged"


def test_bad_bodies_are_400_and_auth_comes_first():
    bad = [b"not json", b"[1,2]", b'"str"', b"123", b"null", b"true",
           b'{"a":', b'{"a":1} trailing', b"{'a':1}",
           ('{"a":' * 70 + '1' + '}' * 70).encode(),
           ('[' * 65 + ']' * 65).encode()]
    with Daemon(workers=1) as d:
        for b in bad:
            assert_refusal(d.post(EP, b, token=TOKEN), 400, b[:30])
            assert_refusal(d.post(META_EP, b, token=TOKEN), 400, b[:30])
        for b in (b"not json", b"[1,2]", bad[9]):
            assert_refusal(d.post(EP, b), 401, "no auth %r" % b[:30])
            assert_refusal(d.post(EP, b, token="wrong"), 401,
                           "wrong auth %r" % b[:30])
        assert_nothing_handled(d)
        ms = metrics(d)
        assert metric_sum(ms, "walua_events_acked_total") == 1, ms
        refused = d.find(lambda l: l.get("msg") == "request refused")
        assert sorted(str(l.get("status")) for l in refused) == \
            ["400"] * (2 * len(bad)) + ["401"] * 6, refused
        assert all(l.get("reason") for l in refused), refused


def test_nesting_64_deep_is_accepted_and_handled():
    # "nested deeper than 64" is refused, so 64 levels are a body like any
    # other: acknowledged, and (not recognised) handed to Lua as "unknown".
    with Daemon(workers=1) as d:
        for depth in (63, 64):
            b = '{"d%d":' % depth * depth + '1' + '}' * depth
            st, _, resp = d.post(EP, b, token=TOKEN)
            assert st == 200, (depth, st, resp)
            assert json_of(resp) == {"ok": True, "events": 1,
                                     "duplicates": 0}, (depth, resp)
        lines = settle(d)
        dead = d.find(lambda l: l.get("msg") in ("event dead-lettered",
                                                 "handler failed"))
        assert dead == [], "an acknowledged body failed before Lua: %r" % dead
        assert [l["kind"] for l in lines] == ["unknown", "unknown"], lines


def test_unrecognised_body_is_kind_unknown():
    with Daemon() as d:
        for path, b in ((EP, b'{"foo":"bar"}'), (META_EP, b'{"foo":"baz"}')):
            st, _, resp = d.post(path, b, token=TOKEN)
            assert st == 200, (path, st, resp)
            assert json_of(resp) == {"ok": True, "events": 1,
                                     "duplicates": 0}, (path, resp)
        lines = d.wait_log(is_handled, count=2)
        got = sorted((l["kind"], l["endpoint"]) for l in lines)
        assert got == [("unknown", EP), ("unknown", META_EP)], lines


def test_body_size_limit():
    with Daemon(workers=1, extra="limits = { max_body = 2048 },") as d:
        # by Content-Length
        for n in (4096, 2049):
            assert_refusal(d.post(EP, json_of_size(n, "cl%d" % n),
                                  token=TOKEN), 413, "%d bytes" % n)
        # chunked, no Content-Length: the total counts, not each chunk
        big = json_of_size(4096, "chunked_big")
        assert_refusal(raw_post(d, EP, ["Transfer-Encoding: chunked"],
                                chunked(big, 512)), 413, "chunked 4096")
        assert_nothing_handled(d)

        # exactly max_body, by Content-Length and chunked: accepted
        st, _, resp = d.post(EP, json_of_size(2048, "exact"), token=TOKEN)
        assert st == 200, ("2048 bytes", st, resp)
        assert json_of(resp) == {"ok": True, "events": 1, "duplicates": 0}
        st, _, resp = raw_post(d, EP, ["Transfer-Encoding: chunked"],
                               chunked(json_of_size(2048, "exact_chunked"),
                                       700))
        assert st == 200, ("2048 bytes chunked", st, resp)
        assert json_of(resp) == {"ok": True, "events": 1, "duplicates": 0}
        lines = settle(d)
        assert [l["kind"] for l in lines] == ["unknown", "unknown"], lines
        assert all(l.get("status") is None for l in lines)
        ms = metrics(d)
        assert metric(ms, "walua_http_requests_total", endpoint=EP,
                      code="413") == 3, ms


def image_body(caption, message_id):
    """An Insider (f) image message with the given caption."""
    b = json.loads(text_body("", message_id))
    m = b["entry"][0]["changes"][0]["value"]["messages"][0]
    del m["text"]
    m["type"] = "image"
    m["image"] = {"id": "1234567890", "mime_type": "image/jpeg",
                  "caption": "@CAPTION@"}
    return json.dumps(b).replace("@CAPTION@", caption).encode()


BIG_CAPTION_HANDLER = r'''
local log = require "walua.log"
return function(ev)
	log.info("handled", { message_id = ev.message_id,
	    text_len = #(ev.text or ""), raw_len = #(ev.raw.image.caption),
	    media_len = #(ev.media.caption), same = ev.text == ev.media.caption })
end
'''


def test_an_event_many_times_its_body_reaches_its_handler():
    # Its caption is in the event three times (ev.raw, ev.text,
    # ev.media.caption).  Sent as JSON, each DEL byte written as \u007f,
    # 3.8 MB of them made a 68 MB event, past the 64 MiB frame that hands
    # an event to a worker: it was refused with a 413.  Packed (README,
    # Design notes), the event is 11.4 MB: stored and handled whole.
    caption = "\x7f" * 3800000
    big = image_body(caption, new_id("BIG"))
    assert len(big) < 4194304
    with Daemon(workers=1, extra="limits = { retries = 0 },",
                handlers={"handler.lua": BIG_CAPTION_HANDLER}) as d:
        d.deliver(big)
        (line,) = d.wait_log(is_handled, timeout=30)
        assert line["text_len"] == line["raw_len"] == line["media_len"] \
            == len(caption.encode()), line
        assert line["same"] is True, line
        assert not d.find(lambda l: l.get("msg") in ("handler failed",
                                                     "event dead-lettered"))


def test_ambiguous_framing_is_400():
    body = text_body("framed twice", new_id()).encode()
    n = len(body)
    cases = [
        ("two equal Content-Length",
         ["Content-Length: %d" % n, "Content-Length: %d" % n], body),
        ("two different Content-Length",
         ["Content-Length: %d" % n, "Content-Length: 2"], body),
        ("Content-Length and chunked",
         ["Content-Length: %d" % n, "Transfer-Encoding: chunked"],
         chunked(body, 100)),
        ("chunked and Content-Length",
         ["Transfer-Encoding: chunked", "Content-Length: %d" % n],
         chunked(body, 100)),
    ]
    with Daemon(workers=1) as d:
        for what, hs, b in cases:
            assert_refusal(raw_post(d, EP, hs, b), 400, what)
        assert_nothing_handled(d)
        # the framing check must not refuse ordinary requests
        st, _, resp = raw_post(d, EP, ["Content-Length: %d" % n], body)
        assert st == 200, (st, resp)


def test_unknown_path_and_wrong_method():
    body = text_body("wrong place", new_id())
    auth = {"Authorization": "Bearer " + TOKEN,
            "Content-Type": "application/json"}
    with Daemon(workers=1) as d:
        # /healthz and /metrics are on the admin listener only
        for method, path in (("GET", "/nope"), ("POST", "/nope"),
                             ("POST", "/webhooks/insiderX"),
                             ("POST", "/webhooks"), ("GET", "/"),
                             ("GET", "/healthz"), ("GET", "/metrics"),
                             ("POST", "/healthz")):
            assert_refusal(d.request(method, path, body if method == "POST"
                                     else None, auth), 404,
                           "%s %s" % (method, path))
        for method in ("PUT", "DELETE", "PATCH"):
            ans = d.request(method, EP, body, auth)
            assert_refusal(ans, 405, method)
            allow = {m.strip().upper()
                     for m in ans[1].get("allow", "").split(",")}
            assert {"POST", "GET", "HEAD"} <= allow, (method, ans[1])
            assert not allow & {"PUT", "DELETE", "PATCH"}, (method, ans[1])
        ans = d.admin_request("POST", "/healthz", b"{}", auth)
        assert ans[0] == 405, ans
        assert "GET" in ans[1].get("allow", "").upper(), ans[1]
        assert_nothing_handled(d)


def test_healthz_and_metrics():
    with Daemon() as d:
        st, headers, body = d.admin_request("GET", "/healthz")
        assert st == 200, (st, body)
        j = json_of(body)
        assert isinstance(j, dict) and j.get("ok") is True, j

        d.deliver(text_body("count me", new_id()))
        d.wait_log(is_handled)
        # a status between two messages: each kind counted apart
        assert d.deliver(fixture("insider/d_status_delivered.json"))[
            "events"] == 1
        d.deliver(text_body("count me too", new_id()))
        ms = wait_metrics(d, lambda ms: metric(
            ms, "walua_events_handled_total", result="ok") >= 3)
        assert metric(ms, "walua_http_requests_total", endpoint=EP,
                      code="200") == 3, ms
        assert metric(ms, "walua_events_acked_total", provider="insider",
                      kind="message") == 2, ms
        assert metric(ms, "walua_events_acked_total", provider="insider",
                      kind="status") == 1, ms
        assert metric_sum(ms, "walua_events_handled_total",
                          result="error") == 0, ms

        st, headers, text = d.admin_request("GET", "/metrics")
        assert headers.get("content-type", "").startswith("text/plain"), \
            headers
        text = text.decode()
        for family, kind in (("walua_http_requests_total", "counter"),
                             ("walua_events_acked_total", "counter"),
                             ("walua_events_handled_total", "counter")):
            assert "# TYPE %s %s" % (family, kind) in text, family


def test_non_ascii_text_reaches_lua_unchanged():
    raw = fixture("insider/f_reply_text_nonascii.json")
    esc = fixture("insider/f_reply_text_nonascii_escaped.json")
    want = json.loads(raw)["entry"][0]["changes"][0]["value"]["messages"][0]
    want_esc = json.loads(esc)["entry"][0]["changes"][0]["value"][
        "messages"][0]
    assert want["text"]["body"] == want_esc["text"]["body"]
    assert "\\u" in esc.decode() and "\\u" not in raw.decode()
    # the escaped variant with its own message id, so it is not a duplicate
    esc = esc.replace(want["id"].encode(), b"wamid.ESCAPEDVARIANT")
    with Daemon() as d:
        for b in (raw, esc):
            st, _, resp = d.post(EP, b, token=TOKEN)
            assert st == 200 and json_of(resp)["events"] == 1, (st, resp)
        lines = d.wait_log(is_handled, count=2)
        by_id = {l["message_id"]: l["text"] for l in lines}
        assert by_id == {want["id"]: want["text"]["body"],
                         "wamid.ESCAPEDVARIANT": want["text"]["body"]}, by_id


RAISING = r'''local log = require "walua.log"
return function(ev)
  log.info("attempt", { text = ev.text, attempt = ev.attempt, id = ev.id })
  if ev.text == "boom" then error("kaboom from the handler") end
  log.info("handled", { text = ev.text, message_id = ev.message_id })
end
'''


def test_raising_handler_is_retried_then_dead_lettered():
    extra = 'limits = { retries = 1, retry_backoff_ms = { 100 } },'
    with Daemon(handlers={"bot.lua": RAISING}, extra=extra) as d:
        boom = new_id()
        assert d.deliver(text_body("boom", boom)) == {
            "ok": True, "events": 1, "duplicates": 0}
        fail = d.wait_log(lambda l: l.get("msg") == "handler failed")[0]
        assert fail.get("level") == "warn", fail
        err = fail.get("error", "")
        assert "kaboom from the handler" in err, fail
        assert re.search(r"bot\.lua:4:", err), fail

        # the daemon goes on while the event waits for its retry
        st, _, body = d.admin_request("GET", "/healthz")
        assert st == 200 and json_of(body)["ok"] is True, (st, body)
        nxt = new_id()
        d.deliver(text_body("next", nxt, wa_id="905320000001"))
        d.wait_log(lambda l: is_handled(l) and l.get("message_id") == nxt)

        dead = d.wait_log(lambda l: l.get("msg") == "event dead-lettered",
                          timeout=5)[0]
        assert "kaboom from the handler" in dead.get("error", ""), dead
        assert str(dead.get("attempt")) == "2", dead
        tries = d.find(lambda l: l.get("msg") == "attempt"
                       and l.get("text") == "boom")
        assert [t["attempt"] for t in tries] == [1, 2], tries
        assert tries[0]["id"] == tries[1]["id"] == dead["event"], tries
        # no third attempt: settle() proves the queue moved on
        settle(d)
        assert len(d.find(lambda l: l.get("msg") == "attempt"
                          and l.get("text") == "boom")) == 2
        ms = metrics(d)
        assert metric(ms, "walua_events_handled_total", result="error") >= 1


LOOPING = r'''local log = require "walua.log"
return function(ev)
  if ev.text == "loop" then
    while true do end
  end
  log.info("handled", { text = ev.text, message_id = ev.message_id })
end
'''


def test_runaway_handler_is_stopped():
    extra = 'limits = { handler_timeout_ms = 300, retries = 0 },'
    # one worker: the next event can only be handled if the runaway is
    # stopped (or its worker replaced)
    with Daemon(handlers={"bot.lua": LOOPING}, extra=extra, workers=1) as d:
        d.deliver(text_body("loop", new_id()))
        t0 = time.time()
        st, _, body = d.admin_request("GET", "/healthz", timeout=5)
        assert st == 200 and json_of(body)["ok"] is True, (st, body)
        nxt = new_id()
        d.deliver(text_body("after the loop", nxt, wa_id="905320000002"))

        def timed_out(l):
            return (l.get("msg") in ("handler failed", "event dead-lettered")
                    and re.search(r"time ?out|timed out",
                                  l.get("error", "") + l.get("reason", ""),
                                  re.I))
        d.wait_log(timed_out, timeout=5)
        took = time.time() - t0
        assert 0.1 <= took <= 3.0, "stopped after %.2fs" % took
        d.wait_log(lambda l: is_handled(l) and l.get("message_id") == nxt,
                   timeout=5)
        st, _, body = d.admin_request("GET", "/healthz", timeout=5)
        assert st == 200, (st, body)
        ms = wait_metrics(d, lambda ms: metric(
            ms, "walua_events_handled_total", result="timeout") >= 1)


GLOBAL = r'''return function(ev) oops_global = 1 end
'''


def test_assigning_a_global_fails_the_event():
    with Daemon(handlers={"bot.lua": GLOBAL},
                extra="limits = { retries = 0 },") as d:
        d.deliver(text_body("global", new_id()))
        dead = d.wait_log(lambda l: l.get("msg") in ("handler failed",
                                                     "event dead-lettered"))
        err = dead[0].get("error", "")
        assert re.search(r"assignment to global", err, re.I), dead[0]
        assert "oops_global" in err, dead[0]
        assert re.search(r"bot\.lua:1:", err), dead[0]


def ipv6_loopback():
    """Whether this machine can listen on ::1 (a container may not)."""
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def test_listen_on_a_bracketed_ipv6_address():
    # listen = "[::1]:PORT", as an IPv6 address is written in a URL: walua
    # listens on ::1 (it used to pass the brackets to getaddrinfo and not
    # start), answers a delivery there, and nothing on 127.0.0.1.
    if not ipv6_loopback():
        print("# skipped: this machine cannot listen on ::1")
        return
    d = Daemon(workers=1)
    cfg = d.config_text().replace('listen = "127.0.0.1:%d"' % d.port,
                                  'listen = "[::1]:%d"' % d.port)
    assert '"[::1]:%d"' % d.port in cfg
    d.write("walua.conf.lua", cfg)
    try:
        d.start()
        c = http.client.HTTPConnection("::1", d.port, timeout=10)
        c.request("POST", "/webhooks/insider",
                  body=text_body("over IPv6", "wamid.V6-1"),
                  headers={"Authorization": "Bearer " + TOKEN,
                           "Content-Type": "application/json"})
        r = c.getresponse()
        body = r.read()
        c.close()
        assert r.status == 200, (r.status, body)
        assert json.loads(body)["events"] == 1, body
        try:
            socket.create_connection(("127.0.0.1", d.port), timeout=1).close()
            v4 = "accepted"
        except OSError:
            v4 = "refused"
        print("# listen [::1]:%d: POST over IPv6 200; 127.0.0.1 %s" % (
            d.port, v4))
        assert v4 == "refused"
    finally:
        d.__exit__(None, None, None)


def test_start_logs_nothing_from_libmicrohttpd():
    # libmicrohttpd logs through walua ("msg":"http") only what goes wrong:
    # a start and a stop with its options as walua gives them log none of
    # its lines (one said the logger was not its first option, so some of
    # its messages could go to stderr unformatted).
    with Daemon(workers=1) as d:
        d.deliver(text_body("hello", "wamid.QUIET-1"))
        d.signal(signal.SIGTERM)
        assert d.proc.wait(15) == 0
        lines = [l for l in d.logs() if isinstance(l, dict) and
                 l.get("msg", "").startswith("http")]
        assert not lines, lines
        text = d.log_text()
        assert "MHD_OPTION" not in text, text[-2000:]
