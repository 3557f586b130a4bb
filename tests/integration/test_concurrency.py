"""Concurrent handlers (README, Handler scripts and the Lua API): each
worker runs up to limits.handler_concurrency events at once, each in a
coroutine of its own; walua.http and walua.sleep yield the event's
coroutine while they wait, so other events run meanwhile.

What is checked, against real daemons and a local HTTP server (Slow,
below) that answers after a delay, or never:

- many events waiting on the network at once are handled together
  (server and /metrics see them in flight), while the events of one
  conversation still run one at a time, in order;
- an event's budget (limits.handler_timeout_ms) covers its network waits
  and its CPU, and stops that event only: a transfer that never ends, a
  CPU loop, a memory bomb and a handler stuck inside C each fail their
  own event while the others of the worker go on (or, for the worker
  killed in C, go back to the queue without an attempt counted);
- SIGKILL of walua with hundreds of events in flight: no worker
  survives, every acknowledged event is handled after the restart, and
  the repeats stay within workers x handler_concurrency + 8 x workers;
- SIGHUP while hundreds of events wait: the old generation finishes
  them, the new script takes what comes after;
- walua.sleep and walua.http in an admin script (`walua run`) block as
  before; walua.sleep in a handler yields; coroutine.yield() at a
  handler's top level fails its event at once; a handler's own coroutine
  may still call walua.http and walua.sleep (they block there).

Every test prints what it measured ("# ..." lines).
"""
import asyncio
import collections
import datetime
import json
import os
import signal
import threading
import time
import urllib.parse

from harness import Daemon, children, lua_str, walua
from test_outbound import Scratch, show, write_conf

RERUNS_PER_WORKER = 8          # pool.c's MARKS_AHEAD (README)
DEFAULT_CONCURRENCY = 256      # limits.handler_concurrency's default

_seq = [0]


def say(fmt, *args):
    print("# " + (fmt % args if args else fmt), flush=True)


def mids_for(tag, n):
    """n message ids unique to this test run."""
    _seq[0] += 1
    return ["wamid.CONC%s-%d-%d-%d" % (tag, os.getpid(), _seq[0], i)
            for i in range(n)]


def sender(n):
    return "90533%07d" % n


def batch(msgs):
    """One Insider body with a text message per (message id, sender, text)."""
    return json.dumps({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "908502123456",
                             "phone_number_id": "106540352242922"},
                "contacts": [],
                "messages": [{"from": wa, "id": mid,
                              "timestamp": "1749416383",
                              "text": {"body": text}, "type": "text"}
                             for mid, wa, text in msgs]}}]}]})


def deliver_batch(d, msgs):
    """Deliver msgs in one body; returns the time of the acknowledgement."""
    resp = d.deliver(batch(msgs))
    assert resp.get("events") == len(msgs), resp
    return time.time()


def is_msg(*msgs):
    return lambda l: l.get("msg") in msgs


def of_mid(mid, *msgs):
    return lambda l: l.get("message_id") == mid and l.get("msg") in msgs


def ts(line):
    """A log line's ts as Unix seconds."""
    t = datetime.datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


def failures(d):
    return d.find(is_msg("handler failed", "event dead-lettered"))


def per_mid(lines):
    return collections.Counter(l.get("message_id") for l in lines)


def wait_until(pred, timeout, what, d=None):
    end = time.time() + timeout
    while not pred():
        if time.time() > end:
            raise AssertionError("%s: not within %.1fs%s" % (
                what, timeout, "; log tail:\n" + d.log_text()[-3000:]
                if d else ""))
        time.sleep(0.01)


def alive(pid):
    """pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


# The local server handlers call -----------------------------------------
class Slow:
    """A local HTTP/1.1 server (asyncio, on its own thread, 127.0.0.1, a free
    port) for handlers to call:

        /delay/<ms>?m=<tag>   200 {"m": tag, "path": ...} after ms
        /hang                 reads the request and never answers

    It counts requests, those open at once (read, not yet answered) and
    their peak, and those whose client closed the connection before the
    answer; `records` has (path, query m, start, end, how) for each, how
    being "answered", "closed" (by the client) or None (still open).  It
    stops itself after `lifetime` seconds at the latest."""

    def __init__(self, lifetime=60):
        self.lifetime = lifetime
        self.lock = threading.Lock()
        self.total = self.open = self.peak = self.closed = 0
        self.records = []
        self.loop = asyncio.new_event_loop()
        self.thread = None
        self.port = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def __enter__(self):
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,),
                                       daemon=True)
        self.thread.start()
        assert ready.wait(5) and self.port, "the local server did not start"
        self.timer = threading.Timer(self.lifetime, self.stop)
        self.timer.daemon = True
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        self.stop()
        return False

    def stop(self):
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None and \
                self.thread is not threading.current_thread():
            self.thread.join(10)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        srv = self.loop.run_until_complete(asyncio.start_server(
            self._conn, "127.0.0.1", 0, backlog=2048))
        self.port = srv.sockets[0].getsockname()[1]
        ready.set()
        try:
            self.loop.run_forever()
        finally:
            srv.close()
            tasks = asyncio.all_tasks(self.loop)
            for t in tasks:
                t.cancel()
            self.loop.run_until_complete(asyncio.gather(
                *tasks, return_exceptions=True))
            self.loop.close()

    def _begin(self, path, m):
        with self.lock:
            self.total += 1
            self.open += 1
            self.peak = max(self.peak, self.open)
            rec = [path, m, time.time(), None, None]
            self.records.append(rec)
        return rec

    def _end(self, rec, how):
        with self.lock:
            self.open -= 1
            rec[3] = time.time()
            rec[4] = how
            if how == "closed":
                self.closed += 1

    async def _conn(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                target = lines[0].split(" ")[1]
                length = 0
                for h in lines[1:]:
                    if h.lower().startswith("content-length:"):
                        length = int(h.split(":", 1)[1])
                if length:
                    await reader.readexactly(length)
                u = urllib.parse.urlsplit(target)
                m = urllib.parse.parse_qs(u.query).get("m", [""])[0]
                rec = self._begin(u.path, m)
                if u.path == "/hang":
                    await reader.read(1)        # until the client gives up
                    self._end(rec, "closed")
                    return
                ms = int(u.path.rsplit("/", 1)[1]) if \
                    u.path.startswith("/delay/") else 0
                try:
                    # anything (or EOF) before the answer: the client left
                    await asyncio.wait_for(reader.read(1), ms / 1000.0)
                    self._end(rec, "closed")
                    return
                except asyncio.TimeoutError:
                    pass
                body = json.dumps({"m": m, "path": u.path}).encode()
                # counted before the client can see the answer
                self._end(rec, "answered")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: "
                             b"application/json\r\nContent-Length: %d\r\n"
                             b"\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.CancelledError,
                ConnectionError, ValueError, IndexError):
            pass        # a bad request, a client gone, or the server stops
        finally:
            writer.close()

    def of(self, pred):
        with self.lock:
            return [tuple(r) for r in self.records if pred(r)]


class Gauges(threading.Thread):
    """Polls /metrics every 20 ms; keeps the highest value of each gauge."""

    NAMES = ("walua_handlers_inflight", "walua_outbound_inflight")

    def __init__(self, d):
        super().__init__(daemon=True)
        self.d = d
        self.max = dict.fromkeys(self.NAMES, 0.0)
        self.polls = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                values = scrape(self.d)
            except OSError:
                values = {}
            for n in self.NAMES:
                self.max[n] = max(self.max[n], values.get(n, 0.0))
            self.polls += 1
            self.done.wait(0.02)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join(10)
        return False


def scrape(d):
    """Every unlabelled sample of /metrics, by name."""
    st, _, body = d.admin_request("GET", "/metrics", timeout=5)
    assert st == 200, (st, body)
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or "{" in line:
            continue
        k, _, v = line.partition(" ")
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


# A handler that calls the local server for each event: PATH is the server
# path; the text "hang"/"slow" picks /hang or a longer delay for tests that
# need one.  Logs "start" (before the call) and "handled" (after it, once
# the answer is checked to be this event's own).
CALLER = r'''
local http = require "walua.http"
local log = require "walua.log"
local URL, PATH, VERSION = %s, %s, %d
return function(ev)
	log.info("start", { message_id = ev.message_id, attempt = ev.attempt,
	    version = VERSION })
	local path = PATH
	if ev.text == "hang" then path = "/hang" end
	local r, err = http.get(URL .. path .. "?m=" .. ev.message_id)
	if not r then error("no answer: " .. tostring(err)) end
	if r.status ~= 200 or type(r.json) ~= "table" or
	    r.json.m ~= ev.message_id then
		error("not this event's answer: " .. tostring(r.status) .. " " ..
		    tostring(r.body))
	end
	log.info("handled", { message_id = ev.message_id, attempt = ev.attempt,
	    version = VERSION })
end
'''


def caller(srv, path, version=1):
    return CALLER % (lua_str(srv.url), lua_str(path), version)


# 1 ---------------------------------------------------------------------
def test_01_many_events_wait_on_the_network_at_once():
    """300 events of 300 conversations, each calling a server that answers
    after 300 ms, with 2 workers: all handled within 3 s of the ack (one
    at a time per worker would take 45 s); the server sees > 100 requests
    at once; walua_handlers_inflight and walua_outbound_inflight pass 100
    (polled every 20 ms), and a scrape while the server holds all 300
    (none answered yet) says 300 for both."""
    n = 300
    with Slow() as srv, Daemon(
            handlers={"handler.lua": caller(srv, "/delay/300")},
            workers=2, log_level="info") as d:
        mids = mids_for("1", n)
        with Gauges(d) as g:
            t_ack = deliver_batch(d, [(m, sender(i), "hi")
                                      for i, m in enumerate(mids)])
            # all n held by the server, none answered yet: n in flight
            wait_until(lambda: srv.open >= n, 5, "all requests open", d)
            t_all = time.time()
            now = scrape(d)
            snap = (time.time() - t_all, srv.open, srv.total,
                    now.get("walua_handlers_inflight"),
                    now.get("walua_outbound_inflight"))
            done = d.wait_log(is_msg("handled"), count=n, timeout=20)
            seen = time.time()
        took = max(ts(l) for l in done) - t_ack
        runs = per_mid(done)
        hist = scrape(d).get("walua_outbound_duration_seconds_count")
        say("%d events, 2 workers, 300 ms server: all handled %.2f s after "
            "the ack (seen %.2f s after); server: %d requests, %d at once at "
            "most; max walua_handlers_inflight %d, walua_outbound_inflight "
            "%d (%d scrapes); walua_outbound_duration_seconds_count %s",
            n, took, seen - t_ack, srv.total, srv.peak,
            g.max["walua_handlers_inflight"],
            g.max["walua_outbound_inflight"], g.polls, hist)
        say("scraped %.0f ms after the server held all %d (then %d open): "
            "walua_handlers_inflight %s, walua_outbound_inflight %s",
            snap[0] * 1000, n, snap[1], snap[3], snap[4])
        assert set(runs) == set(mids) and max(runs.values()) == 1, runs
        assert not failures(d), failures(d)[:3]
        assert took < 3.0, took
        assert srv.peak > 100, srv.peak
        assert g.max["walua_handlers_inflight"] > 100, g.max
        assert g.max["walua_outbound_inflight"] > 100, g.max
        if snap[1] == n and snap[2] == n:       # none answered meanwhile
            assert snap[3] == n and snap[4] == n, (
                "/metrics while the server held all %d requests" % n, snap)
        assert hist is not None and hist >= n, hist


# 2 ---------------------------------------------------------------------
def test_02_one_conversation_in_order_one_at_a_time():
    """20 events of one conversation, each calling the 300 ms server,
    interleaved with 20 events of 20 other conversations: the 20 start and
    finish in arrival order, each after the previous one finished (the
    server never has two of them open), while the other conversations'
    calls overlap."""
    n = 20
    with Slow() as srv, Daemon(
            handlers={"handler.lua": caller(srv, "/delay/300")},
            workers=2, log_level="info") as d:
        seq = mids_for("2S", n)
        other = mids_for("2O", n)
        msgs = []
        for i in range(n):
            msgs.append((seq[i], sender(0), "seq %d" % i))
            msgs.append((other[i], sender(1 + i), "other %d" % i))
        t_ack = deliver_batch(d, msgs)
        d.wait_log(is_msg("handled"), count=2 * n, timeout=30)
        took = time.time() - t_ack
        mine = [l for l in d.logs() if l.get("message_id") in set(seq) and
                l.get("msg") in ("start", "handled")]
        # in the log: start 0, handled 0, start 1, handled 1, ...
        got = [(l["msg"], l["message_id"]) for l in mine]
        want = [(k, m) for m in seq for k in ("start", "handled")]
        assert got == want, got
        reqs = sorted(srv.of(lambda r: r[1] in set(seq)), key=lambda r: r[2])
        assert [r[1] for r in reqs] == seq, [r[1] for r in reqs]
        gaps = [reqs[i + 1][2] - reqs[i][3] for i in range(n - 1)]
        others = srv.of(lambda r: r[1] in set(other))
        other_peak = max(sum(1 for o in others if o[2] <= r[2] < o[3])
                         for r in others)
        say("one conversation: %d events handled in order in %.2f s, one at "
            "a time (smallest gap from one answer to the next request %.1f "
            "ms); %d other conversations' calls up to %d at once",
            n, took, min(gaps) * 1000, n, other_peak)
        assert min(gaps) >= 0, gaps
        assert all(r[4] == "answered" for r in reqs), reqs
        assert other_peak >= 5, other_peak
        assert not failures(d), failures(d)[:3]


# 3 ---------------------------------------------------------------------
def test_03_transfer_that_never_ends_times_out_alone():
    """A handler waiting on a server that never answers fails as a timeout
    once its 1 s budget is over, while 200 events of other conversations
    on the same (only) worker are handled meanwhile; it is retried once
    (attempt 2) after 200 ms, then dead-lettered; each abandoned transfer
    is closed."""
    n = 200
    extra = ("  limits = { handler_timeout_ms = 1000, retries = 1,"
             " retry_backoff_ms = { 200 } },")
    with Slow() as srv, Daemon(
            handlers={"handler.lua": caller(srv, "/delay/300")},
            workers=1, log_level="info", extra=extra) as d:
        (hang,) = mids_for("3H", 1)
        mids = mids_for("3", n)
        deliver_batch(d, [(hang, sender(0), "hang")])
        wait_until(lambda: srv.of(lambda r: r[0] == "/hang"), 5,
                   "the hanging request", d)
        deliver_batch(d, [(m, sender(1 + i), "hi")
                          for i, m in enumerate(mids)])
        dead = d.wait_log(of_mid(hang, "event dead-lettered"), timeout=10)[0]
        starts = d.find(of_mid(hang, "start"))
        failed = d.find(of_mid(hang, "handler failed"))
        done = d.find(lambda l: l.get("msg") == "handled" and
                      l.get("message_id") in set(mids))
        runs = per_mid(done)
        first_fail = ts(failed[0]) - ts(starts[0]) if failed else None
        retry_gap = ts(starts[1]) - ts(failed[0]) if len(starts) > 1 and \
            failed else None
        last_other = max(ts(l) for l in done) - ts(starts[0]) if done \
            else None
        def hung_closed():
            return srv.of(lambda r: r[0] == "/hang" and r[4] == "closed")

        wait_until(lambda: len(hung_closed()) >= 2, 3,
                   "both hanging transfers closed", d)
        say("never-answering server, budget 1 s: attempt 1 failed %.3f s "
            "after its start (%s); %d/%d other events handled meanwhile, the "
            "last %.3f s after it started; retry started %.0f ms after the "
            "failure (attempts seen %s), dead-lettered %.3f s after it; "
            "hanging requests closed by walua: %d",
            first_fail, failed[0].get("error", "")[:60] if failed else None,
            len(runs), n, last_other, (retry_gap or 0) * 1000,
            [s["attempt"] for s in starts], ts(dead) - ts(starts[-1]),
            len(hung_closed()))
        assert [s["attempt"] for s in starts] == [1, 2], starts
        assert len(failed) == 1 and failed[0]["attempt"] == 1, failed
        assert "handler timed out" in failed[0]["error"], failed
        assert "handler timed out" in dead["error"] and \
            dead["attempt"] == 2, dead
        assert 0.95 <= first_fail < 1.5, first_fail
        assert 0.95 <= ts(dead) - ts(starts[1]) < 1.5, dead
        assert 0.15 <= retry_gap < 1.0, retry_gap
        assert set(runs) == set(mids) and max(runs.values()) == 1, runs
        assert ts(failed[0]) > max(ts(l) for l in done), \
            "the other events were not handled while it waited"
        others_failed = [l for l in failures(d)
                         if l.get("message_id") != hang]
        assert not others_failed, others_failed[:3]


# 4 ---------------------------------------------------------------------
CPU_LOOP = r'''
local http = require "walua.http"
local log = require "walua.log"
local URL = %s
return function(ev)
	log.info("start", { message_id = ev.message_id, text = ev.text })
	if ev.text == "loop" then
		while true do end
	end
	local r, err = http.get(URL .. "/delay/300?m=" .. ev.message_id)
	if not r or r.json.m ~= ev.message_id then
		error("no answer: " .. tostring(err))
	end
	log.info("handled", { message_id = ev.message_id })
end
'''


def test_04_cpu_loop_stopped_others_finish():
    """With one worker, 50 events waiting on the 300 ms server, then an
    event whose handler loops (`while true do end`), then 20 more events
    that arrive while it loops: the loop is stopped by its budget
    ("handler timed out"), and the 50 (whose answers came while it looped)
    and the 20 finish normally."""
    n, late_n = 50, 20
    extra = "  limits = { handler_timeout_ms = 1000, retries = 0 },"
    with Slow() as srv, Daemon(
            handlers={"handler.lua": CPU_LOOP % lua_str(srv.url)},
            workers=1, log_level="info", extra=extra) as d:
        (loop,) = mids_for("4L", 1)
        mids = mids_for("4", n)
        late = mids_for("4T", late_n)
        deliver_batch(d, [(m, sender(1 + i), "hi")
                          for i, m in enumerate(mids)])
        wait_until(lambda: srv.open >= n, 5, "50 requests open", d)
        deliver_batch(d, [(loop, sender(0), "loop")])
        d.wait_log(of_mid(loop, "start"), timeout=5)
        deliver_batch(d, [(m, sender(1 + n + i), "hi")
                          for i, m in enumerate(late)])
        dead = d.wait_log(of_mid(loop, "event dead-lettered"), timeout=10)[0]
        start = d.find(of_mid(loop, "start"))[0]
        everyone = set(mids) | set(late)
        d.wait_log(lambda l: l.get("message_id") in everyone and
                   l.get("msg") in ("handled", "event dead-lettered"),
                   count=n + late_n, timeout=10)
        done = d.find(lambda l: l.get("msg") == "handled" and
                      l.get("message_id") in set(mids))
        done_late = d.find(lambda l: l.get("msg") == "handled" and
                           l.get("message_id") in set(late))
        others = [l for l in failures(d) if l.get("message_id") != loop]
        answered = srv.of(lambda r: r[1] in set(mids) and
                          r[4] == "answered" and r[3] < ts(dead))
        say("CPU loop stopped %.3f s after its start: %r; of the %d events "
            "waiting on the network when it began, %d answered by the "
            "server while it looped, %d handled, %d failed%s; of the %d "
            "that arrived while it looped, %d handled",
            ts(dead) - ts(start), dead.get("error", "").splitlines()[0], n,
            len(answered), len(done), len(others),
            (" (%r, %.3f s after the loop's own failure)" % (
                others[0].get("error", "")[:60],
                ts(others[0]) - ts(dead))) if others else "",
            late_n, len(done_late))
        assert "handler timed out" in dead["error"], dead
        assert ts(dead) - ts(start) < 1.5, (start, dead)
        assert not others, others[:3]
        runs = per_mid(done + done_late)
        assert set(runs) == everyone and max(runs.values()) == 1, runs


# 5 ---------------------------------------------------------------------
MEMORY_BOMB = r'''
local http = require "walua.http"
local log = require "walua.log"
local URL = %s
return function(ev)
	log.info("start", { message_id = ev.message_id, text = ev.text })
	if ev.text == "bomb" then
		local t, i = {}, 0
		while true do
			i = i + 1
			t[i] = string.rep("x", 65536) .. i
		end
	end
	local r, err = http.get(URL .. "/delay/1000?m=" .. ev.message_id)
	if not r or r.json.m ~= ev.message_id then
		error("no answer: " .. tostring(err))
	end
	log.info("handled", { message_id = ev.message_id })
end
'''


def test_05_memory_bomb_fails_its_event_only():
    """With one worker (32 MiB cap), 50 events waiting on the server (1 s,
    so that the bomb surely goes off while they wait), then an event that
    fills the state: that one fails with "not enough memory"; the worker
    retires, naming the 50 events it still finishes; each of the 50 is
    handled exactly once; a new worker replaces the old one."""
    n = 50
    extra = ("  limits = { handler_memory_mb = 32, retries = 0,"
             " handler_timeout_ms = 5000 },")
    with Slow() as srv, Daemon(
            handlers={"handler.lua": MEMORY_BOMB % lua_str(srv.url)},
            workers=1, log_level="info", extra=extra) as d:
        (bomb,) = mids_for("5B", 1)
        mids = mids_for("5", n)
        (after,) = mids_for("5A", 1)
        before = children(d.proc.pid)
        deliver_batch(d, [(m, sender(1 + i), "hi")
                          for i, m in enumerate(mids)])
        wait_until(lambda: srv.open >= n, 5, "50 requests open", d)
        deliver_batch(d, [(bomb, sender(0), "bomb")])
        dead = d.wait_log(of_mid(bomb, "event dead-lettered"), timeout=10)[0]
        d.wait_log(lambda l: l.get("message_id") in set(mids) and
                   l.get("msg") in ("handled", "event dead-lettered"),
                   count=n, timeout=10)
        retire = d.find(lambda l: "memory cap" in l.get("msg", ""))
        # the replacement takes the next event
        deliver_batch(d, [(after, sender(0), "hi")])
        d.wait_log(of_mid(after, "handled", "event dead-lettered"),
                   timeout=10)
        now = children(d.proc.pid)
        done = d.find(lambda l: l.get("msg") == "handled" and
                      l.get("message_id") in set(mids))
        runs = per_mid(done)
        others = [l for l in failures(d) if l.get("message_id") != bomb]
        after_fail = sum(1 for l in done if ts(l) >= ts(dead))
        say("memory bomb: %r; retire line: %r; of the %d events waiting, %d "
            "handled (%d after the bomb failed), %d failed; workers before "
            "%s, after %s", dead.get("error", "").splitlines()[0],
            retire[0]["msg"] if retire else None, n, len(runs), after_fail,
            len(others), before, now)
        assert "not enough memory" in dead["error"], dead
        assert len(retire) == 1, retire
        assert "once its %d other events are over" % n in retire[0]["msg"], \
            retire
        assert not others, others[:3]
        assert set(runs) == set(mids) and max(runs.values()) == 1, runs
        assert after_fail == n, "not all of them waited while it went off"
        assert d.find(of_mid(after, "handled")), "the next event failed"
        assert len(before) == 1 and len(now) == 1 and before != now, \
            (before, now)


# 6 ---------------------------------------------------------------------
def test_06_sigkill_with_500_in_flight():
    """500 events of 500 conversations acknowledged, their handlers all
    waiting on a 2 s server; SIGKILL walua: no worker survives (the server
    sees every connection closed); after a restart on the same database
    every acknowledged event is handled, and the handler runs beyond one
    per event stay within workers x handler_concurrency + 8 x workers."""
    n, workers = 500, 2
    bound = workers * DEFAULT_CONCURRENCY + RERUNS_PER_WORKER * workers
    with Slow() as srv, Daemon(
            handlers={"handler.lua": caller(srv, "/delay/2000")},
            workers=workers, log_level="info") as d:
        mids = mids_for("6", n)
        deliver_batch(d, [(m, sender(i), "hi") for i, m in enumerate(mids)])
        wait_until(lambda: srv.total >= n, 10, "500 requests in flight", d)
        pids = children(d.proc.pid)
        d.proc.kill()
        d.proc.wait(10)
        t_kill = time.time()
        wait_until(lambda: not any(alive(p) for p in pids), 5,
                   "the workers to die with walua")
        gone = time.time() - t_kill
        wait_until(lambda: srv.closed >= n, 5,
                   "the server to see the workers' connections closed")
        closed = time.time() - t_kill
        first = d.find(is_msg("handled"))
        d.restart()
        t0 = time.time()
        done = d.wait_log(lambda l: l.get("msg") == "handled" and
                          l.get("message_id") in set(mids), count=n,
                          timeout=20)
        took = time.time() - t0
        starts = d.find(is_msg("start"))
        repeats = len(starts) - n
        runs = per_mid(done)
        say("SIGKILL with %d events in flight (%d workers %s): workers gone "
            "%.2f s after, %d connections closed by then (%.2f s); handled "
            "before the kill: %d; after the restart all handled in %.2f s; "
            "handler runs %d, repeats %d (bound %d); server requests %d",
            n, len(pids), pids, gone, srv.closed, closed, len(first), took,
            len(starts), repeats, bound, srv.total)
        assert len(pids) == workers, pids
        assert set(runs) == set(mids), set(mids) - set(runs)
        assert 0 <= repeats <= bound, (repeats, bound)
        assert sum(runs.values()) - n <= bound, runs
        assert not failures(d), failures(d)[:3]


# 7 ---------------------------------------------------------------------
def test_07_sighup_while_events_wait():
    """SIGHUP while 500 events wait on a 1 s server: none fails, the old
    generation finishes them (their lines say version 1), and events
    delivered after "reload ok" run the new script (version 2)."""
    n, m = 500, 20
    with Slow() as srv, Daemon(
            handlers={"handler.lua": caller(srv, "/delay/1000", 1)},
            workers=2, log_level="info") as d:
        old = mids_for("7O", n)
        new = mids_for("7N", m)
        t_ack = deliver_batch(d, [(x, sender(i), "hi")
                                  for i, x in enumerate(old)])
        wait_until(lambda: srv.total >= n, 10, "500 requests open", d)
        path = os.path.join(d.dir, "handler.lua")
        with open(path + ".tmp", "w") as f:
            f.write(caller(srv, "/delay/1000", 2))
        os.replace(path + ".tmp", path)
        t_hup = time.time()
        d.signal(signal.SIGHUP)
        ok = d.wait_log(is_msg("reload ok", "reload failed"),
                        timeout=10)[0]
        assert ok["msg"] == "reload ok", ok
        t_ok = time.time()
        deliver_batch(d, [(x, sender(n + i), "hi")
                          for i, x in enumerate(new)])
        done = d.wait_log(is_msg("handled"), count=n + m, timeout=20)
        old_lines = [l for l in done if l["message_id"] in set(old)]
        new_lines = [l for l in done if l["message_id"] in set(new)]
        versions_old = collections.Counter(l["version"]
                                           for l in old_lines)
        versions_new = collections.Counter(l["version"]
                                           for l in new_lines)
        first_old = min(ts(l) for l in old_lines)
        say("SIGHUP %.2f s after the ack of %d events waiting on a 1 s "
            "server; reload ok %.2f s later, %.2f s before the first of "
            "them finished; versions of the old events %s, of the %d "
            "delivered after reload ok %s; failures %d",
            t_hup - t_ack, n, t_ok - t_hup, first_old - ts(ok), dict(
                versions_old), m, dict(versions_new), len(failures(d)))
        assert not failures(d), failures(d)[:3]
        assert ts(ok) < first_old, "reload ok only after they finished"
        assert per_mid(old_lines) == collections.Counter(old), \
            per_mid(old_lines)
        assert versions_old == {1: n}, versions_old
        assert versions_new == {2: m}, versions_new


# 8 ---------------------------------------------------------------------
ADMIN_SCRIPT = r'''
local walua = require "walua"
local http = require "walua.http"
local json = require "walua.json"
local U = ...
local a = http.get(U .. "/delay/0?m=before")
local slept = walua.sleep(200)
local b = http.get(U .. "/delay/0?m=after")
local c, err = http.get(U .. "/delay/300?m=slow")
print(json.encode({ sleep = type(walua.sleep), slept = slept,
    a = a and a.json and a.json.m, b = b and b.json and b.json.m,
    c = c and c.json and c.json.m, c_status = c and c.status,
    err = err and tostring(err) }))
'''


def test_08_sleep_and_http_in_an_admin_script():
    """`walua run script.lua`: require "walua" gives sleep, which sleeps
    (the server sees the requests before and after it 200 ms apart), and
    walua.http gets an answer from a server that takes 300 ms."""
    with Scratch() as s, Slow() as srv:
        conf = write_conf(s)
        script = s.write("admin.lua", ADMIN_SCRIPT)
        t0 = time.time()
        p = walua("run", "-c", conf, script, srv.url, timeout=20)
        took = time.time() - t0
        assert p.returncode == 0, show(p)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        rec = {r[1]: r for r in srv.of(lambda r: True)}
        gap = rec["after"][2] - rec["before"][3]
        slow = rec["slow"][3] - rec["slow"][2]
        say("admin script: walua.sleep(200) between two requests: %.0f ms "
            "apart at the server; the 300 ms server answered %r (%.0f ms); "
            "the run took %.2f s", gap * 1000, out.get("c"), slow * 1000,
            took)
        assert out["sleep"] == "function", out
        assert out["a"] == "before" and out["b"] == "after", out
        assert out["c"] == "slow" and out["c_status"] == 200, out
        assert 0.2 <= gap < 0.6, gap
        assert slow >= 0.3 and took >= 0.5, (slow, took)


# 9 ---------------------------------------------------------------------
SLEEPER = r'''
local walua = require "walua"
local http = require "walua.http"
local log = require "walua.log"
local URL = %s
return function(ev)
	if ev.text == "yield" then
		coroutine.yield()
	elseif ev.text == "own" then
		-- a coroutine of the handler's own: walua.http and walua.sleep
		-- block there, and work
		local co = coroutine.wrap(function(a)
			walua.sleep(50)
			local r = http.get(URL .. "/delay/100?m=" .. ev.message_id)
			coroutine.yield(a .. ":" .. (r and r.json.m or "none"))
			return "second"
		end)
		local first, second = co("own"), co()
		log.info("handled", { message_id = ev.message_id,
		    result = first .. "," .. second })
		return
	else
		walua.sleep(200)
	end
	log.info("handled", { message_id = ev.message_id })
end
'''


def test_09_sleep_yields_and_a_stray_yield_fails():
    """With one worker: 100 events each calling walua.sleep(200) are handled
    in well under 100 x 0.2 s; a handler calling coroutine.yield() at its
    top level fails at once with an error naming coroutine.yield, and the
    worker goes on; a handler's own coroutine may call walua.sleep and
    walua.http."""
    n = 100
    extra = "  limits = { retries = 0, handler_timeout_ms = 3000 },"
    with Slow() as srv, Daemon(
            handlers={"handler.lua": SLEEPER % lua_str(srv.url)},
            workers=1, log_level="info", extra=extra) as d:
        (stray,) = mids_for("9Y", 1)
        (own,) = mids_for("9W", 1)
        mids = mids_for("9", n)
        t_stray = time.time()
        deliver_batch(d, [(stray, sender(0), "yield")])
        dead = d.wait_log(of_mid(stray, "event dead-lettered"), timeout=10)[0]
        stray_took = ts(dead) - t_stray
        t_ack = deliver_batch(d, [(m, sender(1 + i), "sleep")
                                  for i, m in enumerate(mids)])
        done = d.wait_log(lambda l: l.get("msg") == "handled" and
                          l.get("message_id") in set(mids), count=n,
                          timeout=15)
        took = max(ts(l) for l in done) - t_ack
        deliver_batch(d, [(own, sender(0), "own")])
        line = d.wait_log(of_mid(own, "handled", "event dead-lettered"),
                          timeout=10)[0]
        say("%d events sleeping 200 ms each, 1 worker: all handled %.2f s "
            "after the ack; coroutine.yield() at the top level failed %.3f "
            "s after its delivery began: %r; the handler's own coroutine: %r",
            n, took, stray_took, dead.get("error", "").splitlines()[0][:100],
            line.get("result") or line.get("error", "")[:100])
        assert "coroutine.yield" in dead["error"], dead
        assert stray_took < 1.0, stray_took
        assert took < 3.0, took
        assert max(per_mid(done).values()) == 1, per_mid(done)
        assert line["msg"] == "handled" and \
            line["result"] == "own:%s,second" % own, line
        assert [l["message_id"] for l in failures(d)] == [stray], \
            failures(d)[:3]


# 10 --------------------------------------------------------------------
STUCK_IN_C = r'''
local http = require "walua.http"
local log = require "walua.log"
local URL = %s
return function(ev)
	log.info("start", { message_id = ev.message_id, attempt = ev.attempt })
	if ev.text == "stuck" then
		-- seconds inside C, where no count hook fires
		string.find(("a"):rep(90), ("a*"):rep(5) .. "b")
	end
	local r, err = http.get(URL .. "/delay/300?m=" .. ev.message_id)
	if not r or r.json.m ~= ev.message_id then
		error("no answer: " .. tostring(err))
	end
	log.info("handled", { message_id = ev.message_id, attempt = ev.attempt })
end
'''


def test_10_stuck_in_c_others_go_back_to_the_queue():
    """With one worker, 30 events waiting on the 300 ms server, then one
    whose handler spends seconds in string.find: the supervisor kills the
    worker at 1.5x the budget, blaming that event ("handler stopped: it ran
    past its time budget"); the 30 go back to the queue without an attempt
    counted and are handled by the replacement (attempt 1)."""
    n = 30
    extra = "  limits = { handler_timeout_ms = 1000, retries = 0 },"
    with Slow() as srv, Daemon(
            handlers={"handler.lua": STUCK_IN_C % lua_str(srv.url)},
            workers=1, log_level="info", extra=extra) as d:
        (stuck,) = mids_for("10S", 1)
        mids = mids_for("10", n)
        deliver_batch(d, [(m, sender(1 + i), "hi")
                          for i, m in enumerate(mids)])
        wait_until(lambda: srv.open >= n, 5, "30 requests open", d)
        deliver_batch(d, [(stuck, sender(0), "stuck")])
        dead = d.wait_log(of_mid(stuck, "event dead-lettered"), timeout=10)[0]
        stopping = d.find(is_msg("stopping worker: handler past its budget"))
        back = d.find(lambda l: l.get("msg", "").startswith(
            "events in flight on a stopped worker go back to the queue"))
        done = d.wait_log(lambda l: l.get("msg") == "handled" and
                          l.get("message_id") in set(mids), count=n,
                          timeout=10)
        start = d.find(of_mid(stuck, "start"))[0]
        runs = per_mid(done)
        starts = per_mid(d.find(lambda l: l.get("msg") == "start" and
                                l.get("message_id") in set(mids)))
        say("stuck in C: worker stopped %.2f s after the event started, "
            "blaming %s; %r; %s events back to the queue; all %d handled "
            "(attempts %s), each started %s times",
            ts(dead) - ts(start),
            "it" if stopping and stopping[0].get("message_id") == stuck
            else stopping[:1], dead.get("error", "")[:60],
            back[0].get("events") if back else None, len(runs),
            sorted(set(l["attempt"] for l in done)),
            sorted(set(starts.values())))
        assert "handler stopped: it ran past its time budget" in \
            dead["error"], dead
        assert len(stopping) == 1 and \
            stopping[0].get("message_id") == stuck, stopping
        assert len(back) == 1 and int(back[0]["events"]) == n, back
        assert set(runs) == set(mids) and max(runs.values()) == 1, runs
        assert all(l["attempt"] == 1 for l in done), done[:3]
        assert [l["message_id"] for l in failures(d)] == [stuck], \
            failures(d)[:3]
