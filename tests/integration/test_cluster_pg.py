"""Several walua instances on one PostgreSQL database (README, "Running
several instances"): one event per delivery whichever instance it reached,
each handled once, each conversation in arrival order, an instance that
dies resumed by another, a database that goes away answered with 503.

The handler counts, per conversation, in walua.store (an atomic incr on
the shared database): the count orders the handlings of a conversation
across instances, which the log's millisecond times cannot.
"""
import multiprocessing
import threading
import time

import pgcluster
from harness import Daemon, lua_str, text_body
from test_deploy import post_raw

ORDERED = r'''
local log = require "walua.log"
local store = require "walua.store"
return function(ev)
	local n = store.incr("n:" .. ev.conversation, 1)
	log.info("handled", { message_id = ev.message_id, text = ev.text,
	    conversation = ev.conversation, n = n })
end
'''


def post(port, body, timeout=10):
    """One delivery on a new connection (test_deploy.post_raw): the
    status, or an error name."""
    try:
        return post_raw(port, body, timeout)
    except OSError as e:
        return "refused" if isinstance(e, ConnectionRefusedError) else \
            type(e).__name__


def delivery(i, convs):
    """Delivery i: conversation i % convs, its text the index."""
    return text_body("%d" % i, "wamid.CL%06d" % i,
                     wa_id="90532%07d" % (i % convs)).encode()


def sender(ports, indexes, convs, both_every, q):
    """Post the deliveries of indexes, one after the other, alternately
    to the two instances; every both_every-th to both at once (two
    threads)."""
    out = []
    for i in indexes:
        body = delivery(i, convs)
        if both_every and i % both_every == 0:
            res = [None, None]

            def one(j):
                res[j] = post(ports[j], body)
            ts = [threading.Thread(target=one, args=(j,)) for j in (0, 1)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(30)
            out.append((i, res[0], res[1]))
        else:
            out.append((i, post(ports[i % 2], body), None))
    q.put(out)


def run_senders(ports, n, convs, both_every, procs=4):
    """n deliveries from procs processes; each conversation's from one of
    them, one at a time, so its arrival order is its index order."""
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    ps = [ctx.Process(target=sender, args=(
        ports, [i for i in range(n) if i % convs % procs == k], convs,
        both_every, q)) for k in range(procs)]
    for p in ps:
        p.start()
    results = []
    for _ in ps:
        results += q.get(timeout=300)
    for p in ps:
        p.join(10)
    return results


def handled(daemons):
    """Every "handled" line of the daemons: (message_id, conv, n, text)."""
    out = []
    for d in daemons:
        for l in d.logs():
            if l.get("msg") == "handled":
                out.append((l["message_id"], l["conversation"], l["n"],
                            int(l["text"])))
    return out


def wait_handled(daemons, want, timeout):
    end = time.time() + timeout
    h = handled(daemons)
    while time.time() < end and len({m for m, _, _, _ in h}) < want:
        time.sleep(0.25)
        h = handled(daemons)
    return h


def check_order(h):
    """Per conversation, the texts (arrival indexes) in count order must
    rise, counts being 1..N without gaps but for re-runs."""
    by = {}
    for _, conv, n, text in h:
        by.setdefault(conv, []).append((n, text))
    bad = []
    for conv, rows in by.items():
        rows.sort()
        texts = [t for _, t in rows]
        if texts != sorted(texts):
            bad.append((conv, texts[:20]))
    return bad


def instance(url, lease_s=30, log_level="info"):
    return Daemon(handlers={"h.lua": ORDERED}, log_level=log_level,
                  extra="database = %s,\ncluster = { lease_s = %d }," % (
                      lua_str(url), lease_s))


def test_two_instances_one_event_each_in_conversation_order():
    pg = pgcluster.shared()
    url = pg.new_database()
    n, convs = 5000, 50
    with instance(url) as a, instance(url) as b:
        t0 = time.time()
        results = run_senders((a.port, b.port), n, convs, both_every=10)
        took = time.time() - t0
        statuses = {}
        for _, s1, s2 in results:
            for s in (s1, s2):
                if s is not None:
                    statuses[s] = statuses.get(s, 0) + 1
        print("# %d deliveries (%d posted to both at once) in %.1f s: %s" % (
            len(results), sum(1 for r in results if r[2] is not None), took,
            statuses))
        assert set(statuses) == {200}, statuses
        h = wait_handled((a, b), n, 120)
        counts = {}
        for m, _, _, _ in h:
            counts[m] = counts.get(m, 0) + 1
        twice = [m for m, c in counts.items() if c > 1]
        per = [len([l for l in d.logs() if l.get("msg") == "handled"])
               for d in (a, b)]
        print("# handled %d distinct of %d, by instance %s, twice %d" % (
            len(counts), n, per, len(twice)))
        assert len(counts) == n, len(counts)
        assert twice == [], twice[:5]
        assert min(per) > 0, per
        bad = check_order(h)
        assert bad == [], bad[:3]
        # walua.store's incr, from both instances, counted each event
        # of a conversation once: 1..N without a gap or a repeat
        by = {}
        for _, conv, n_, _ in h:
            by.setdefault(conv, []).append(n_)
        gaps = [c for c, ns in by.items()
                if sorted(ns) != list(range(1, len(ns) + 1))]
        assert gaps == [], gaps[:3]
        db = url.rsplit("/", 1)[1]
        assert pg.psql("SELECT count(*) FROM events", db).strip() == str(n)
        assert pg.psql("SELECT count(*) FROM events WHERE state <> 1",
                       db).strip() == "0"


def slow_handler(ms):
    return r'''
local walua = require "walua"
local log = require "walua.log"
local store = require "walua.store"
return function(ev)
	walua.sleep(%d)
	local n = store.incr("n:" .. ev.conversation, 1)
	log.info("handled", { message_id = ev.message_id, text = ev.text,
	    conversation = ev.conversation, n = n })
end
''' % ms


def test_sigkill_of_one_instance_the_other_finishes_its_events():
    pg = pgcluster.shared()
    url = pg.new_database()
    lease_s, n, convs = 3, 600, 10
    extra = "database = %s,\ncluster = { lease_s = %d }," % (lua_str(url),
                                                             lease_s)
    # 60 events a conversation at 50 ms each: 3 s of work per conversation
    a = Daemon(handlers={"h.lua": slow_handler(50)}, log_level="info",
               extra=extra)
    b = Daemon(handlers={"h.lua": slow_handler(50)}, log_level="info",
               extra=extra)
    with a, b:
        results = run_senders((a.port, b.port), n, convs, both_every=0)
        acked = {i for i, s, _ in results if s == 200}
        assert len(acked) == n, {s for _, s, _ in results}
        # a is still busy with its share: kill it mid-way
        before = len(handled((a,)))
        a.kill9()
        t_kill = time.time()
        print("# killed one instance after it handled %d" % before)
        assert 0 < before and len(handled((a, b))) < n, before
        h = wait_handled((a, b), n, lease_s + 30)
        took = time.time() - t_kill
        got = {m for m, _, _, _ in h}
        lost = ["wamid.CL%06d" % i for i in sorted(acked)
                if "wamid.CL%06d" % i not in got]
        counts = {}
        for m, _, _, _ in h:
            counts[m] = counts.get(m, 0) + 1
        twice = sum(1 for c in counts.values() if c > 1)
        print("# all %d handled %.1f s after the kill (lease_s %d); "
              "re-run %d (in flight when killed)" % (len(got), took, lease_s,
                                                     twice))
        assert lost == [], lost[:5]
        assert took <= lease_s + 5, took
        assert check_order(h) == []


def test_postgresql_stopped_503_then_200_nothing_lost():
    pg = pgcluster.Cluster()        # its own: this test stops it
    try:
        pg.start()
        url = pg.new_database()
        # a handler without walua.store: the test is about deliveries
        plain = ORDERED.replace('store.incr("n:" .. ev.conversation, 1)',
                                '0')
        with Daemon(handlers={"h.lua": plain}, log_level="info",
                    extra="database = %s," % lua_str(url)) as d:
            stop = threading.Event()
            log = []

            def load():
                i = 0
                while not stop.is_set():
                    st = post(d.port, delivery(i, 20), timeout=10)
                    log.append((time.time(), i, st))
                    i += 1
                    time.sleep(0.005)
            t = threading.Thread(target=load)
            t.start()
            time.sleep(1)
            pg.stop()
            t_stop = time.time()
            time.sleep(1.5)
            st, _, body = d.admin_request("GET", "/healthz")
            assert st == 503 and b'"database":"unavailable"' in body, body
            time.sleep(3.5)
            pg.start()
            t_back = time.time()
            time.sleep(4)
            stop.set()
            t.join(30)
            down = [st for ts, _, st in log if t_stop + 0.5 < ts < t_back]
            after = [(ts, st) for ts, _, st in log if ts > t_back]
            first_ok = next((ts for ts, st in after if st == 200), None)
            acked = [i for _, i, st in log if st == 200]
            print("# while stopped: %s; first 200 %.2f s after the return; "
                  "%d acknowledged in all" % (
                      {s: down.count(s) for s in set(down)},
                      (first_ok or 0) - t_back, len(acked)))
            assert down and 200 not in down, set(down)
            assert set(down) == {503}, set(down)
            assert first_ok is not None and first_ok - t_back <= 2.0
            h = wait_handled((d,), len(acked), 30)
            got = {m for m, _, _, _ in h}
            lost = [i for i in acked if "wamid.CL%06d" % i not in got]
            assert lost == [], lost[:5]
            st, _, body = d.admin_request("GET", "/healthz")
            assert st == 200, body
    finally:
        pg.close()


SLOW_FIRST = r'''
local walua = require "walua"
local log = require "walua.log"
return function(ev)
	log.info("started", { message_id = ev.message_id })
	if ev.text == "slow" then walua.sleep(800) end
	log.info("handled", { message_id = ev.message_id, text = ev.text,
	    conversation = ev.conversation, n = 0 })
end
'''


def log_time(ts):
    import datetime
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def test_an_event_another_instance_holds_the_conversation_of_is_claimed_at_once():
    """b stores an event of a conversation a is busy with: a, notified,
    claims it within 100 ms (not at its next poll, half a second), and
    handles it after the first; b never does."""
    pg = pgcluster.shared()
    url = pg.new_database()
    extra = "database = %s," % lua_str(url)
    a = Daemon(handlers={"h.lua": SLOW_FIRST}, log_level="debug", extra=extra)
    b = Daemon(handlers={"h.lua": SLOW_FIRST}, log_level="debug", extra=extra)
    with a, b:
        for r in range(3):
            first, second = "wamid.NF%d-1" % r, "wamid.NF%d-2" % r
            wa = "9053299%05d" % r
            assert post(a.port, text_body("slow", first, wa_id=wa).encode()) \
                == 200
            a.wait_log(lambda l: l.get("msg") == "started" and
                       l.get("message_id") == first)
            claims = len(a.find(lambda l: l.get("msg") ==
                                "cluster: events claimed"))
            assert post(b.port, text_body("fast", second, wa_id=wa).encode()) \
                == 200
            t_ack = time.time()
            a.wait_log(lambda l: l.get("msg") == "cluster: events claimed",
                       count=claims + 1)
            claimed = a.find(lambda l: l.get("msg") ==
                             "cluster: events claimed")[claims]
            delay = log_time(claimed["ts"]) - t_ack
            a.wait_log(lambda l: l.get("msg") == "handled" and
                       l.get("message_id") == second)
            order = [l["message_id"] for l in a.find(
                lambda l: l.get("msg") == "handled")][-2:]
            print("# round %d: claimed by the busy instance %.0f ms after "
                  "the other's 200; handled %s" % (r, delay * 1000, order))
            assert delay < 0.1, delay
            assert order == [first, second], order
        assert not b.find(lambda l: l.get("msg") == "handled"), \
            "b handled an event of a conversation a held"


def test_instances_starting_at_once_on_a_new_database():
    """Three instances started together on an empty database: the schema
    is made once (an advisory lock), all three serve."""
    pg = pgcluster.shared()
    url = pg.new_database()
    ds = [instance(url) for _ in range(3)]
    try:
        for d in ds:
            d.start(wait=False)
        for d in ds:
            d.wait_ready()
        for k, d in enumerate(ds):
            assert post(d.port, delivery(k, 3)) == 200
        h = wait_handled(ds, 3, 10)
        assert len({m for m, _, _, _ in h}) == 3, h
        db = url.rsplit("/", 1)[1]
        assert pg.psql("SELECT value FROM meta WHERE key = "
                       "'schema_version'", db).strip() == "1"
        assert pg.psql("SELECT count(*) FROM instances", db).strip() == "3"
    finally:
        for d in ds:
            d.__exit__(None, None, None)


def test_a_token_issued_by_one_instance_is_accepted_by_the_other():
    import test_auth as ta
    pg = pgcluster.shared()
    url = pg.new_database()
    extra = "database = %s,\n%s" % (lua_str(url), ta.oauth_extra())
    a = Daemon(extra=extra, endpoints=ta.endpoints(), workers=1)
    b = Daemon(extra=extra, endpoints=ta.endpoints(), workers=1)
    with a, b:
        t = ta.expect_token(ta.tok(a, form=ta.CC, basic=(ta.CLIENT_ID,
                                                         ta.CLIENT_SECRET)),
                            "a token from a")
        st, _, body = b.post(ta.OAUTH_EP, text_body("x", "wamid.TK1"),
                             token=t)
        assert st == 200, (st, body)
        st, _, body = b.post(ta.OAUTH_EP, text_body("x", "wamid.TK2"),
                             token="ab" * 32)
        assert st == 401, (st, body)
        b.wait_log(lambda l: l.get("msg") == "handled" and
                   l.get("message_id") == "wamid.TK1")


def test_sigusr2_upgrade_on_postgresql_loses_nothing():
    """The upgrade under load of test_deploy, on PostgreSQL: the new
    process runs beside the old (no lock file), the old gives its
    unfinished events back when it stops, each is handled once."""
    import harness
    import test_deploy
    harness.PG = True
    try:
        test_deploy.test_sigusr2_upgrade_under_load_refuses_nothing_loses_nothing()
    finally:
        harness.PG = False


def test_the_url_password_is_never_printed():
    """A URL with a password (the test cluster trusts any): serve logs,
    `walua run inbox stats` and check never show it."""
    from harness import walua
    pg = pgcluster.shared()
    url = pg.new_database().replace("postgres@", "postgres:s3cretpw@")
    with instance(url) as d:
        assert post(d.port, delivery(1, 1)) == 200
        wait_handled((d,), 1, 10)
        p = walua("run", "-c", d.conf, "inbox", "stats")
        assert p.returncode == 0, p.stderr
        assert "***@" in p.stdout and "s3cretpw" not in p.stdout, p.stdout
        p = walua("check", "-c", d.conf)
        assert "s3cretpw" not in p.stdout + p.stderr
        assert d.stop() == 0
        assert "s3cretpw" not in d.log_text()
