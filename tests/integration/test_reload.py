"""Reload (SIGHUP), graceful stop (SIGTERM, SIGINT) and per-conversation
ordering, against a real daemon.

README: Commands (signals), Configuration (what SIGHUP applies), Handler
scripts and the Lua API (ordering); and a reload never fails or drops a
request, and a reload whose scripts do not compile keeps the running ones
and logs why.
"""
import http.client
import json
import os
import re
import signal
import socket
import threading
import time

from harness import (Daemon, text_body, default_endpoints, free_port,
                     metric, TOKEN)


def versioned(version, busy_ms=0):
    """A handler that logs one "handled" line per event with its version.

    busy_ms > 0 spins the worker's CPU for that long before logging (os.clock
    is in the sandbox), so that completion order says something about
    dispatch order."""
    spin = ""
    if busy_ms:
        spin = ("\tlocal t0 = os.clock()\n"
                "\twhile os.clock() - t0 < %f do end\n" % (busy_ms / 1000.0))
    return ('local log = require "walua.log"\n'
            'return function(ev)\n'
            '%s'
            '\tlog.info("handled", { version = %d, text = ev.text,\n'
            '\t    message_id = ev.message_id, from = ev.from })\n'
            'end\n' % (spin, version))


# A handler with a syntax error on line 3 (an unclosed table constructor).
BROKEN = ('local log = require "walua.log"\n'
          'return function(ev)\n'
          '\tlog.info("handled", { version = 99, text = ev.text\n'
          'end\n')


def is_msg(m):
    return lambda l: l.get("msg") == m


def handled_for(mid):
    return lambda l: l.get("msg") == "handled" and l.get("message_id") == mid


def health(d):
    status, _, body = d.admin_request("GET", "/healthz", timeout=5)
    assert status == 200, (status, body)
    return json.loads(body)


def deliver_and_wait(d, text, mid, **kw):
    """Deliver one text message; return its "handled" log line."""
    resp = d.deliver(text_body(text, mid, **kw))
    assert resp.get("events") == 1, resp
    return d.wait_log(handled_for(mid))[0]


def hup_and_wait(d, msg, count, timeout=15):
    """SIGHUP, then wait until `count` lines with msg exist in total."""
    d.signal(signal.SIGHUP)
    return d.wait_log(is_msg(msg), count=count, timeout=timeout)


def write_atomic(d, name, text):
    """Replace a file of the daemon's folder in one step (rename), so a
    concurrent reload never reads it half-written."""
    path = os.path.join(d.dir, name)
    tmp = path + ".tmp%d" % threading.get_ident()
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# 1 ---------------------------------------------------------------------
def test_reload_changes_handler():
    with Daemon(handlers={"handler.lua": versioned(1)}) as d:
        line = deliver_and_wait(d, "before", "wamid.RL1-A")
        assert line["version"] == 1, line
        gen0 = health(d)["generation"]
        d.write("handler.lua", versioned(2))
        ok = hup_and_wait(d, "reload ok", 1)
        assert int(ok[0]["generation"]) == gen0 + 1, (ok[0], gen0)
        line = deliver_and_wait(d, "after", "wamid.RL1-B")
        assert line["version"] == 2, line
        assert line["text"] == "after", line
        h = health(d)
        assert h["generation"] == gen0 + 1, (h, gen0)
        assert metric(d, "walua_generation") == gen0 + 1
        assert metric(d, "walua_reloads_total", 'result="ok"') == 1
        assert not d.find(is_msg("reload failed")), d.find(
            is_msg("reload failed"))
        assert d.stop() == 0


# 2 ---------------------------------------------------------------------
def wait_metric(d, name, labels, value, timeout=10):
    end = time.time() + timeout
    while True:
        v = metric(d, name, labels)
        if v == value:
            return
        if time.time() > end:
            raise AssertionError("%s{%s} is %r, expected %r; log tail:\n%s"
                                 % (name, labels, v, value,
                                    d.log_text()[-3000:]))
        time.sleep(0.05)


def failed_reload(d, n):
    """SIGHUP for failed reload number n (1-based); return the "error"
    fields of the "reload failed" lines it logged."""
    before = len(d.find(is_msg("reload failed")))
    d.signal(signal.SIGHUP)
    wait_metric(d, "walua_reloads_total", 'result="error"', n)
    return [l.get("error", "") for l in d.find(is_msg("reload failed"))
            [before:]]


BROKEN_ATTEMPTS = 25


def test_reload_broken_handler_keeps_old():
    with Daemon(handlers={"handler.lua": versioned(1)}) as d:
        assert deliver_and_wait(d, "one", "wamid.RL2-A")["version"] == 1
        gen0 = health(d)["generation"]
        d.write("handler.lua", BROKEN)
        # The compiler's message, with the file and line, must be what is
        # logged, every time: repeat the failed reload a few times, since
        # which of a worker's exit and its error report the daemon sees
        # first is a race.
        errors = []
        for n in range(1, BROKEN_ATTEMPTS + 1):
            errs = failed_reload(d, n)
            errors.append(errs)
            if n == 1:
                assert metric(d, "walua_reloads_total",
                              'result="error"') == 1
        assert not d.find(is_msg("reload ok")), d.find(is_msg("reload ok"))
        bad = [(n + 1, e) for n, e in enumerate(errors)
               if not any(re.search(r"handler\.lua:\d+:", x) for x in e)]
        assert not bad, ("failed reloads whose error does not name "
                         "handler.lua:LINE (attempt, errors): %s" % bad)
        line = deliver_and_wait(d, "two", "wamid.RL2-B")
        assert line["version"] == 1, line
        assert health(d)["generation"] == gen0
        assert metric(d, "walua_reloads_total", 'result="ok"') in (None, 0)

        d.write("handler.lua", versioned(3))
        ok = hup_and_wait(d, "reload ok", 1)
        # the generation counts generations that became current: the
        # failed attempts used up no number
        gen1 = int(ok[0]["generation"])
        print("# generation %d, then %d failed reloads and a good one: %d"
              % (gen0, BROKEN_ATTEMPTS, gen1))
        assert gen1 == gen0 + 1, (ok, gen0)
        assert health(d)["generation"] == gen1
        assert metric(d, "walua_generation") == gen1
        line = deliver_and_wait(d, "three", "wamid.RL2-C")
        assert line["version"] == 3, line
        assert metric(d, "walua_reloads_total", 'result="ok"') == 1
        assert metric(d, "walua_reloads_total",
                      'result="error"') == BROKEN_ATTEMPTS
        assert d.stop() == 0


# 3 ---------------------------------------------------------------------
def test_reload_bad_config_keeps_old():
    with Daemon(handlers={"handler.lua": versioned(1)}) as d:
        assert deliver_and_wait(d, "one", "wamid.RL3-A")["version"] == 1
        gen0 = health(d)["generation"]
        # The handler changes too: a config that fails must change nothing,
        # so the new handler must not be picked up either.
        d.write("handler.lua", versioned(2))
        d.write("walua.conf.lua", d.config_text(extra="  bogus_key = 1,"))
        errs = failed_reload(d, 1)
        assert any("bogus_key" in e for e in errs), errs
        assert not d.find(is_msg("reload ok")), d.find(is_msg("reload ok"))
        assert deliver_and_wait(d, "two", "wamid.RL3-B")["version"] == 1

        # unknown keys are an error at any depth
        d.write("walua.conf.lua", d.config_text(
            extra="  limits = { retriez = 3 },"))
        errs = failed_reload(d, 2)
        assert any("retriez" in e for e in errs), errs
        assert not d.find(is_msg("reload ok")), d.find(is_msg("reload ok"))
        assert deliver_and_wait(d, "three", "wamid.RL3-C")["version"] == 1
        assert health(d)["generation"] == gen0
        assert metric(d, "walua_reloads_total", 'result="error"') == 2

        # a good config again: the new handler is applied
        d.write("walua.conf.lua", d.config_text())
        hup_and_wait(d, "reload ok", 1)
        assert deliver_and_wait(d, "four", "wamid.RL3-D")["version"] == 2
        assert d.stop() == 0


# 4 ---------------------------------------------------------------------
def test_reload_rotates_token():
    new = "rotated-token-9876543210"
    with Daemon() as d:
        body = text_body("x", "wamid.RL4-A")
        assert d.post("/webhooks/insider", body, token=new)[0] == 401
        assert d.post("/webhooks/insider", body, token=TOKEN)[0] == 200
        d.write("walua.conf.lua",
                d.config_text(endpoints=default_endpoints(new)))
        hup_and_wait(d, "reload ok", 1)
        for path in ("/webhooks/insider", "/webhooks/meta-bearer"):
            st, _, resp = d.post(path, text_body("y", "wamid.RL4-B"),
                                 token=TOKEN)
            assert st == 401, (path, st, resp)
        st, _, resp = d.post("/webhooks/insider",
                             text_body("z", "wamid.RL4-C"), token=new)
        assert st == 200, (st, resp)
        assert json.loads(resp)["events"] == 1, resp
        d.wait_log(handled_for("wamid.RL4-C"))
        assert not d.find(handled_for("wamid.RL4-B"))
        assert not d.find(is_msg("reload failed"))
        # the rotated token is a secret: never in the log
        assert new not in d.log_text()
        assert d.stop() == 0


# 5 ---------------------------------------------------------------------
def test_reload_listen_change_needs_restart():
    with Daemon(handlers={"handler.lua": versioned(1)}) as d:
        gen0 = health(d)["generation"]
        workers0 = health(d).get("workers")
        other = free_port()
        conf = d.config_text(workers=3).replace(
            "127.0.0.1:%d" % d.port, "127.0.0.1:%d" % other)
        assert ("127.0.0.1:%d" % other) in conf
        d.write("walua.conf.lua", conf)
        d.write("handler.lua", versioned(2))
        d.signal(signal.SIGHUP)
        changed = d.wait_log(
            is_msg("setting changed: restart walua to apply it"), count=2)
        keys = sorted(l.get("key") for l in changed)
        assert keys == ["listen", "workers"], changed
        # the rest of the file (the handlers) is still applied
        d.wait_log(is_msg("reload ok"))
        assert health(d)["generation"] == gen0 + 1, (health(d), gen0)
        # healthz counts live worker processes, the retiring generation's
        # too for a moment: wait for it to settle back to `workers`
        end = time.time() + 5
        while health(d).get("workers") != workers0 and time.time() < end:
            time.sleep(0.05)
        assert health(d).get("workers") == workers0, (health(d), workers0)
        # still on the old port, nothing on the new one
        assert deliver_and_wait(d, "same port", "wamid.RL5-A")["version"] == 2
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", other))
            listening = True
        except OSError:
            listening = False
        finally:
            s.close()
        assert not listening, "walua listens on the new port %d" % other
        assert d.stop() == 0


# 6 ---------------------------------------------------------------------
STRESS_N = 2000
STRESS_CONNS = 8


def test_reload_stress_no_drop_no_dup():
    deadline = time.time() + 120
    with Daemon(handlers={"handler.lua": versioned(1)}) as d:
        stop = threading.Event()
        lock = threading.Lock()
        bad = []                 # (n, status or exception, body)
        answers = [0]
        hups = [0]
        connects = [0]

        def client(k):
            conn = None
            for n in range(k, STRESS_N, STRESS_CONNS):
                if time.time() > deadline - 30:
                    with lock:
                        bad.append((n, "client deadline", b""))
                    return
                body = text_body("stress %d" % n,
                                 "wamid.STRESS-%d" % n).encode()
                hdr = {"Content-Type": "application/json",
                       "Authorization": "Bearer " + TOKEN}
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(
                            "127.0.0.1", d.port, timeout=15)
                        with lock:
                            connects[0] += 1
                    conn.request("POST", "/webhooks/insider", body, hdr)
                    r = conn.getresponse()
                    resp = r.read()
                    st = r.status
                    if r.getheader("Connection", "").lower() == "close":
                        conn.close()
                        conn = None
                except Exception as e:           # a dropped request
                    with lock:
                        bad.append((n, repr(e), b""))
                    if conn is not None:
                        conn.close()
                    conn = None
                    continue
                ok = st == 200
                if ok:
                    try:
                        ok = json.loads(resp).get("events") == 1
                    except ValueError:
                        ok = False
                with lock:
                    answers[0] += 1
                    if not ok:
                        bad.append((n, st, resp[:200]))
            if conn is not None:
                conn.close()

        def hupper():
            v = 1
            while not stop.is_set():
                v = 3 - v                # alternate two equivalent versions
                write_atomic(d, "handler.lua", versioned(v))
                d.signal(signal.SIGHUP)
                hups[0] += 1
                stop.wait(0.05)

        t0 = time.time()
        h = threading.Thread(target=hupper, daemon=True)
        clients = [threading.Thread(target=client, args=(k,), daemon=True)
                   for k in range(STRESS_CONNS)]
        h.start()
        for c in clients:
            c.start()
        for c in clients:
            c.join(max(1, deadline - 25 - time.time()))
        t_post = time.time() - t0
        stop.set()
        h.join(5)
        assert not any(c.is_alive() for c in clients), "clients hung"
        assert d.proc.poll() is None, "walua died:\n" + d.log_text()[-3000:]

        # every acknowledged message handled, exactly once
        ids = set("wamid.STRESS-%d" % n for n in range(STRESS_N))

        def stress_handled():
            return [l for l in d.find(is_msg("handled"))
                    if l.get("message_id") in ids]

        end = min(deadline - 5, time.time() + 60)
        while len(stress_handled()) < STRESS_N and time.time() < end:
            time.sleep(0.1)
        t_all = time.time() - t0
        time.sleep(0.5)          # late duplicates, if any, show up now
        lines = stress_handled()
        counts = {}
        for l in lines:
            counts[l["message_id"]] = counts.get(l["message_id"], 0) + 1
        dups = sorted(m for m, c in counts.items() if c > 1)
        missing = sorted(ids - set(counts))
        reloads_ok = len(d.find(is_msg("reload ok")))
        reloads_err = d.find(is_msg("reload failed"))
        versions = {}
        for l in lines:
            versions[l.get("version")] = versions.get(l.get("version"), 0) + 1
        print("stress: %d requests over %d connections (%d TCP connects), "
              "%d answers, "
              "%d SIGHUPs sent, %d \"reload ok\", %d \"reload failed\"; "
              "posting %.2fs, all handled after %.2fs; handled by version %s"
              % (STRESS_N, STRESS_CONNS, connects[0], answers[0], hups[0],
                 reloads_ok,
                 len(reloads_err), t_post, t_all, versions))
        assert not bad, "%d bad answers, first: %s" % (len(bad), bad[:5])
        assert answers[0] == STRESS_N, answers
        assert not dups, "%d duplicates, first: %s" % (len(dups), dups[:5])
        assert not missing, "%d missing, first: %s" % (len(missing),
                                                       missing[:5])
        assert reloads_ok >= 5, reloads_ok
        assert not reloads_err, reloads_err[:3]
        assert d.stop() == 0


# 7 ---------------------------------------------------------------------
def test_conversation_order_two_workers():
    # a handler taking 0..6 ms, depending on the text, so two workers
    # running one conversation's events side by side would reorder them
    src = ('local log = require "walua.log"\n'
           'return function(ev)\n'
           '\tlocal n = tonumber((ev.text or ""):match("(%d+)$")) or 0\n'
           '\tlocal t0 = os.clock()\n'
           '\twhile os.clock() - t0 < ((n * 7) % 4) * 0.002 do end\n'
           '\tlog.info("handled", { text = ev.text, from = ev.from,\n'
           '\t    message_id = ev.message_id })\n'
           'end\n')
    with Daemon(handlers={"handler.lua": src}, workers=2) as d:
        one = "905320000001"
        stop = threading.Event()
        other_ids = []
        errors = []

        def others():
            i = 0
            try:
                while not stop.is_set() and i < 400:
                    mid = "wamid.ORD-O-%d" % i
                    d.deliver(text_body("other %d" % i, mid,
                                        wa_id="90533%07d" % (i % 7)))
                    other_ids.append(mid)
                    i += 1
            except Exception as e:
                errors.append(repr(e))

        t = threading.Thread(target=others, daemon=True)
        t.start()
        sent = []
        try:
            for i in range(50):
                txt = "mine %d" % i
                resp = d.deliver(text_body(txt, "wamid.ORD-M-%d" % i,
                                           wa_id=one))
                assert resp["events"] == 1, resp
                sent.append(txt)
        finally:
            stop.set()
            t.join(30)
        assert not errors, errors
        assert len(other_ids) > 0, "no concurrent traffic was sent"
        d.wait_log(lambda l: l.get("msg") == "handled"
                   and l.get("from") == one, count=50, timeout=30)
        mine = [l["text"] for l in d.find(is_msg("handled"))
                if l.get("from") == one]
        assert mine == sent, "handled order: %s" % mine
        # the conversation id is the same for all of them
        convs = set(l.get("conversation") for l in d.find(is_msg("handled"))
                    if l.get("from") == one)
        assert len(convs) == 1, convs
        assert d.stop() == 0


# 8 ---------------------------------------------------------------------
def test_sigterm_finishes_acknowledged():
    # each event takes ~20 ms, so some are still queued at SIGTERM
    with Daemon(handlers={"handler.lua": versioned(1, busy_ms=20)}) as d:
        for i in range(20):
            resp = d.deliver(text_body("term %d" % i, "wamid.TERM-%d" % i))
            assert resp["events"] == 1, resp
        d.signal(signal.SIGTERM)
        queued = 20 - len([l for l in d.find(is_msg("handled"))])
        print("sigterm: %d of 20 acknowledged events not yet handled at "
              "SIGTERM" % queued)
        try:
            rc = d.proc.wait(15)
        except Exception:
            raise AssertionError("walua did not exit within 15 s of SIGTERM")
        assert rc == 0, (rc, d.log_text()[-3000:])
        lines = d.logs()
        assert any(l.get("msg") == "stopped" for l in lines), \
            d.log_text()[-3000:]
        got = sorted(l["message_id"] for l in lines
                     if l.get("msg") == "handled")
        want = sorted("wamid.TERM-%d" % i for i in range(20))
        assert got == want, ("queued at SIGTERM: %d" % queued,
                             sorted(set(want) - set(got)), got)


# 9 ---------------------------------------------------------------------
def test_sigint_stops_gracefully():
    with Daemon() as d:
        deliver_and_wait(d, "int", "wamid.INT-1")
        d.signal(signal.SIGINT)
        try:
            rc = d.proc.wait(15)
        except Exception:
            raise AssertionError("walua did not exit within 15 s of SIGINT")
        assert rc == 0, (rc, d.log_text()[-3000:])
        assert d.find(is_msg("stopped")), d.log_text()[-3000:]
        # and it no longer answers
        try:
            d.admin_request("GET", "/healthz", timeout=2)
            answered = True
        except OSError:
            answered = False
        assert not answered, "walua still answers after SIGINT"


# 10 --------------------------------------------------------------------
def test_reload_burst_coalesced_last_change_wins():
    """SIGHUPs during a reload are coalesced, but the last file written
    before the last SIGHUP is what ends up running."""
    with Daemon(handlers={"handler.lua": versioned(1)}) as d:
        gen0 = health(d)["generation"]
        write_atomic(d, "handler.lua", versioned(2))
        for _ in range(10):
            d.signal(signal.SIGHUP)
            time.sleep(0.001)
        write_atomic(d, "handler.lua", versioned(3))
        d.signal(signal.SIGHUP)
        d.wait_log(is_msg("reload ok"))
        # wait until the generation number stays put for a while
        last, still = health(d)["generation"], 0
        end = time.time() + 10
        while still < 5 and time.time() < end:
            time.sleep(0.1)
            g = health(d)["generation"]
            still = still + 1 if g == last else 0
            last = g
        oks = d.find(is_msg("reload ok"))
        print("burst: 11 SIGHUPs -> %d \"reload ok\"" % len(oks))
        assert 1 <= len(oks) <= 11, oks
        assert not d.find(is_msg("reload failed"))
        assert last > gen0
        assert int(oks[-1]["generation"]) == last, (oks, last)
        assert deliver_and_wait(d, "final", "wamid.BURST-1")["version"] == 3
        assert d.stop() == 0


# A script whose top level spends seconds inside C (string.find
# backtracking: about 7 s for 90 characters), where no count hook fires.
HANGS_AT_LOAD = ('local r = string.find(("a"):rep(90), ("a*"):rep(5) .. "b")\n'
                 'return function(ev) end\n')


def test_a_script_stuck_at_load_fails_the_reload_in_time():
    """A reload whose script hangs at load inside C fails once the load
    deadline passes (1.5 x handler_timeout_ms per script, plus 2 s), the
    running scripts go on, and the next reload works; `serve` with such
    a script exits instead of waiting forever."""
    extra = "  limits = { handler_timeout_ms = 500 },"
    with Daemon(handlers={"handler.lua": versioned(1)}, extra=extra,
                workers=1) as d:
        d.write("handler.lua", HANGS_AT_LOAD)
        t0 = time.time()
        d.signal(signal.SIGHUP)
        failed = d.wait_log(is_msg("reload failed"), timeout=10)
        took = time.time() - t0
        print("     reload with a script stuck in C at load failed after "
              "%.1fs: %s" % (took, failed[0].get("error")))
        assert "did not load the handler scripts within" in \
            failed[0].get("error", ""), failed
        assert took < 5, took
        d.deliver(text_body("still v1", "wamid.LOADHANG-1"))
        line = d.wait_log(handled_for("wamid.LOADHANG-1"))[0]
        assert line["version"] == 1, line
        d.write("handler.lua", versioned(2))
        d.signal(signal.SIGHUP)
        d.wait_log(is_msg("reload ok"), timeout=10)
        d.deliver(text_body("now v2", "wamid.LOADHANG-2"))
        line = d.wait_log(handled_for("wamid.LOADHANG-2"))[0]
        assert line["version"] == 2, line
    d = Daemon(handlers={"handler.lua": HANGS_AT_LOAD}, extra=extra,
               workers=1)
    try:
        t0 = time.time()
        d.start(wait=False)
        try:
            rc = d.proc.wait(timeout=5)
        except Exception:
            raise AssertionError("serve with a script stuck at load was "
                                 "still waiting after 5 s")
        print("     serve with it exited %d after %.1fs" % (
            rc, time.time() - t0))
        assert rc != 0
        assert "did not load the handler scripts within" in d.log_text()
    finally:
        d.__exit__(None, None, None)


def read_lines(path):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if l.startswith("{")]
    except OSError:
        return []


def test_log_file_and_durability_on_reload():
    """A new log_file is used only once the new generation runs: a reload
    that fails keeps logging where it did.  A durability change is logged
    as needing a restart (the inbox's connection was opened with it)."""
    extra = '  log_file = "first.log", durability = "normal",'
    with Daemon(handlers={"handler.lua": versioned(1)}, extra=extra) as d:
        first = os.path.join(d.dir, "first.log")
        second = os.path.join(d.dir, "second.log")
        conf = open(d.conf).read()
        d.write("walua.conf.lua", conf.replace('"first.log"', '"second.log"')
                .replace('"normal"', '"full"'))
        d.write("handler.lua", BROKEN)
        d.signal(signal.SIGHUP)
        end = time.time() + 10
        while not any(l.get("msg") == "reload failed"
                      for l in read_lines(first) + read_lines(second)):
            assert time.time() < end, "no reload failed line"
            time.sleep(0.05)
        d.deliver(text_body("after a failed reload", "wamid.LOGF-1"))
        end = time.time() + 10
        while not any(l.get("message_id") == "wamid.LOGF-1"
                      for l in read_lines(first) + read_lines(second)):
            assert time.time() < end, "event not handled"
            time.sleep(0.05)
        in_second = [l.get("msg") for l in read_lines(second)]
        restart = [l.get("key") for l in read_lines(first) + read_lines(second)
                   if l.get("msg") ==
                   "setting changed: restart walua to apply it"]
        print("     after a failed reload: %d lines went to the new log "
              "file; restart needed for %s" % (len(in_second), restart))
        assert in_second == [], in_second
        assert "durability" in restart, restart
        d.write("handler.lua", versioned(2))
        d.signal(signal.SIGHUP)
        end = time.time() + 10
        while not any(l.get("msg") == "reload ok" for l in read_lines(first)
                      + read_lines(second)):
            assert time.time() < end, "no reload ok"
            time.sleep(0.05)
        d.deliver(text_body("after a good reload", "wamid.LOGF-2"))
        end = time.time() + 10
        while not any(l.get("message_id") == "wamid.LOGF-2"
                      for l in read_lines(second)):
            assert time.time() < end, "the new log file is not used"
            time.sleep(0.05)
