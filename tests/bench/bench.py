#!/usr/bin/env python3
"""bench.py - walua's benchmark (README, Performance: where walua stands):
walua beside the floor and its peers, on the same machine, payloads and
load.

    python3 tests/bench/bench.py            the full run (make bench)
    python3 tests/bench/bench.py --smoke    one short round (make bench-smoke)

Servers, started one after another on 127.0.0.1 (free ports), pinned with
`taskset -c $BENCH_SERVER_CPU` (0) with every process and thread they
start, while wrk runs pinned to $BENCH_WRK_CPU (1):

  floor            tests/bench/floor.c: libmicrohttpd, reads the body, 200
  nginx-lua        Debian's nginx + lua-nginx-module, private prefix and
                   config, one worker: tests/bench/nginx_bot.lua
  node             Node's http module: tests/bench/node_server.js
  walua-D-wN       ./walua serve, durability D (normal, full), N workers,
                   handler tests/bench/walua_bot.lua

Each does the same work per request: bearer check, JSON decode, the events
taken out of the Meta envelope, messages routed by three text rules with a
trivial action each; walua also commits each event to its SQLite inbox
before answering and runs the handler in a worker process.

Scenarios: text-ka / status-ka (Insider text reply / delivered status,
keep-alive) and text-close / status-close (`Connection: close`).  Every
request carries a new message id (post.lua), so walua never takes its
cheaper duplicate path.

The I/O scenario (plan item "io[:100ms,1s]", run once after the rounds):
handlers that wait on a slow API.  $BENCH_IO_EVENTS (2000) text messages
in as many conversations, posted by io_post.py; each makes one GET to
io_backend (io_backend.c), which answers after the delay.  walua with its
defaults (walua_io.conf.lua, walua_io_bot.lua) beside Node (io_node.js:
fetch after answering 200).  It reports handled events/s, the time from
the last ack to the last event handled, the backend's most requests open
at once (events in flight) and RSS, in its own section of the results.

A run measures, over the window from wrk's start to (walua) the backlog
handled: req/s and p50/p99 latency (wrk), the server's CPU time per request
(utime+stime of its whole process tree from /proc), its RSS after the run
(VmRSS summed over the tree), for walua the events handled during the run
(/metrics) and how long the backlog took.  A run is disturbed when the
machine's busy time (/proc/stat, with irq, softirq and the hypervisor's
steal) exceeds what the server, wrk, the kernel's threads and this script
used by more than $BENCH_MAX_OTHERS (0.10) of a core; it is redone, at
most $BENCH_RETRIES (2) times.  Rounds are interleaved; the table shows
medians.

Environment (defaults for the full run; --smoke: 1 round of 2 s, keep-alive
text only, floor + walua normal + whichever peers are installed, no
retries):
  BENCH_SECONDS 10   BENCH_ROUNDS 3   BENCH_CONNECTIONS 32
  BENCH_WRK_THREADS 1   BENCH_SERVER_CPU 0   BENCH_WRK_CPU 1
  BENCH_WORKERS "1 2" (walua worker counts tried)
  BENCH_MAIN_WORKERS 1 (the "walua normal" compared with the peers)
  BENCH_PLAN  "server:scenario,scenario server:..." (overrides the plan)
  BENCH_RETRIES 2   BENCH_MAX_OTHERS 0.10   BENCH_DRAIN_SECONDS 30
  BENCH_QUIET_SECONDS 30 (before a run, wait at most this long for the
  other programs to use less than BENCH_MAX_OTHERS)
  BENCH_RESULTS tests/bench/RESULTS.md (smoke: obj/bench/RESULTS-smoke.md)
  WALUA_BIN ./walua   BENCH_FLOOR obj/bench/floor   BENCH_FLOOR_THREADS 1
  BENCH_COMMAND (the command line written to the results file)
  I/O scenario: BENCH_IO_EVENTS 2000 (smoke 100)   BENCH_IO_BATCH 1
  (messages per POST)   BENCH_IO_CONNECTIONS 32   BENCH_IO_TIMEOUT 180
  (smoke 8; a run is stopped this long after its first POST)
  BENCH_IO_SERVERS "node walua walua-c512"   BENCH_IO_BACKEND obj/bench/io_backend
  BENCH_DECODE obj/bench/decode (decoding alone; skipped when not built)

Exit status: 0 when every server started, answered its sanity requests
and every run completed with no non-2xx answer; 1 otherwise.  Targets are
reported, never asserted.
"""
import calendar
import glob
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLK = os.sysconf("SC_CLK_TCK")
SMOKE = "--smoke" in sys.argv[1:]


def env(name, default):
    v = os.environ.get(name, "")
    return v if v.strip() else default


SECONDS = float(env("BENCH_SECONDS", "2" if SMOKE else "10"))
ROUNDS = int(env("BENCH_ROUNDS", "1" if SMOKE else "3"))
CONNECTIONS = int(env("BENCH_CONNECTIONS", "32"))
WRK_THREADS = int(env("BENCH_WRK_THREADS", "1"))
SERVER_CPU = env("BENCH_SERVER_CPU", "0")
WRK_CPU = env("BENCH_WRK_CPU", "1")
WORKERS = [int(w) for w in env("BENCH_WORKERS", "1 2").split()]
MAIN_WORKERS = int(env("BENCH_MAIN_WORKERS", str(WORKERS[0])))
RETRIES = int(env("BENCH_RETRIES", "0" if SMOKE else "2"))
MAX_OTHERS = float(env("BENCH_MAX_OTHERS", "0.10"))
QUIET_SECONDS = float(env("BENCH_QUIET_SECONDS", "0" if SMOKE else "30"))
DRAIN_SECONDS = float(env("BENCH_DRAIN_SECONDS", "10" if SMOKE else "30"))
RESULTS = env("BENCH_RESULTS", os.path.join(
    ROOT, "obj", "bench", "RESULTS-smoke.md") if SMOKE
    else os.path.join(HERE, "RESULTS.md"))
WALUA = os.path.abspath(os.path.join(ROOT, env("WALUA_BIN", "walua")))
FLOOR = os.path.abspath(os.path.join(ROOT, env("BENCH_FLOOR",
                                                "obj/bench/floor")))
FLOOR_THREADS = env("BENCH_FLOOR_THREADS", "1")
DECODE = os.path.abspath(os.path.join(ROOT, env("BENCH_DECODE",
                                               "obj/bench/decode")))
IO_BACKEND = os.path.abspath(os.path.join(ROOT, env("BENCH_IO_BACKEND",
                                                     "obj/bench/io_backend")))
IO_EVENTS = int(env("BENCH_IO_EVENTS", "100" if SMOKE else "2000"))
IO_BATCH = int(env("BENCH_IO_BATCH", "1"))
IO_CONNECTIONS = int(env("BENCH_IO_CONNECTIONS", "32"))
IO_TIMEOUT = float(env("BENCH_IO_TIMEOUT", "8" if SMOKE else "180"))
IO_SERVERS = env("BENCH_IO_SERVERS", "node walua walua-c512").split()
TOKEN = "bench-" + uuid.uuid4().hex
MAIN = "walua-normal-w%d" % MAIN_WORKERS
PEERS = ["floor", "nginx-lua", "node"]

SCENARIOS = {
    "text-ka": ("payload_text.json", False),
    "status-ka": ("payload_status.json", False),
    "text-close": ("payload_text.json", True),
    "status-close": ("payload_status.json", True),
}


def default_plan():
    if SMOKE:
        plan = [("floor", ["text-ka"])]
        plan += [(p, ["text-ka"]) for p in ("nginx-lua", "node")
                 if peer_available(p)]
        return plan + [(MAIN, ["text-ka"]), ("io", ["100ms"])]
    full = ["text-ka", "status-ka", "text-close"]
    plan = [(p, full) for p in PEERS] + [(MAIN, full)]
    plan += [("walua-normal-w%d" % w, ["text-ka"]) for w in WORKERS
             if w != MAIN_WORKERS]
    plan += [("walua-full-w%d" % w, ["text-ka"]) for w in WORKERS]
    return plan + [("io", ["100ms", "1s"])]


def parse_plan(text):
    """BENCH_PLAN: "server[:scenario,...] ..."; the item "io[:delay,...]"
    is the I/O scenario with those backend delays (default 100ms,1s)."""
    plan = []
    for item in text.split():
        name, _, scen = item.partition(":")
        if name == "io":
            scens = scen.split(",") if scen else ["100ms", "1s"]
            for s in scens:
                if delay_ms(s) is None:
                    sys.exit("bench: bad I/O delay %r in BENCH_PLAN (e.g."
                             " 100ms, 1s)" % s)
            plan.append((name, scens))
            continue
        scens = scen.split(",") if scen else ["text-ka"]
        for s in scens:
            if s not in SCENARIOS:
                sys.exit("bench: unknown scenario %r in BENCH_PLAN" % s)
        plan.append((name, scens))
    return plan


def delay_ms(label):
    """"100ms" -> 100, "1s" -> 1000, else None."""
    m = re.fullmatch(r"(\d+)(ms|s)", label)
    if not m:
        return None
    return int(m.group(1)) * (1 if m.group(2) == "ms" else 1000)


# -- the machine and processes ----------------------------------------------

def nginx_bin():
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


NGINX_MODDIRS = ["/usr/lib/nginx/modules", "/usr/share/nginx/modules"]


def nginx_moddir():
    for d in NGINX_MODDIRS:
        if os.path.exists(os.path.join(d, "ngx_http_lua_module.so")):
            return d
    return None


def cjson_cpath():
    """LuaJIT (nginx's Lua) loads Lua 5.1 C modules: lua-cjson's 5.1 one."""
    found = sorted(glob.glob("/usr/lib/*/lua/5.1/cjson.so") +
                   glob.glob("/usr/lib/lua/5.1/cjson.so") +
                   glob.glob("/usr/local/lib/lua/5.1/cjson.so"))
    return os.path.join(os.path.dirname(found[0]), "?.so") if found else None


def peer_available(name):
    if name == "nginx-lua":
        return bool(nginx_bin() and nginx_moddir() and cjson_cpath())
    if name == "node":
        return bool(shutil.which("node") or shutil.which("nodejs"))
    return True


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def machine_ticks():
    """(busy, steal) ticks of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice;
    # guest time is already inside user.  irq and softirq count: a tick
    # that lands in softirq (loopback traffic is processed there) is also
    # charged to the task it interrupted, so the server's and wrk's times
    # include theirs.  The steal (the hypervisor running another guest
    # on our CPUs) counts as well: it slows the server as much as a program
    # here would, and it is returned apart too, for the notes.
    steal = v[7] if len(v) > 7 else 0
    return v[0] + v[1] + v[2] + v[5] + v[6] + steal, steal


def read_stat(pid):
    """(ppid, cpu ticks incl. reaped children, starttime) or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()
    # f[0] is field 3 (state): ppid 4, utime 14, stime 15, cutime 16,
    # cstime 17, starttime 22
    return (int(f[1]), int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]),
            int(f[19]))


def scan():
    """{pid: (ppid, cpu ticks, starttime)} of every process."""
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = read_stat(int(d))
            if st:
                table[int(d)] = st
    return table


def process_tree(root, table=None):
    """{pid: (cpu ticks, starttime)} for root and all its descendants."""
    table = scan() if table is None else table
    if root not in table:
        return {}
    kids = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        out[pid] = (table[pid][1], table[pid][2])
        todo.extend(kids.get(pid, []))
    return out


def kernel_threads(table):
    """The kernel's threads (kthreadd and its children) as a tree: their
    time (softirq, writeback, the journal's commits) is the kernel working
    for the run, not another program."""
    return process_tree(2, table) if 2 in table else {}


def thread_ticks(root, pids):
    """({label: cpu ticks}, {label: voluntary context switches}) by thread
    of a tree, for walua's breakdown: the root's main thread, its other
    threads by name (those running libmicrohttpd are "http"), and its
    child processes (the handler workers).  A voluntary context switch is
    a thread that went to sleep and was woken."""
    out, wakes = {}, {}
    for pid in pids:
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    st = f.read()
            except OSError:
                continue
            comm = st[st.index("(") + 1:st.rindex(")")]
            f = st[st.rindex(")") + 2:].split()
            if pid != root:
                label = "worker processes"
            elif int(tid) == pid:
                label = "main thread"
            elif comm == "http" or comm.startswith("MHD"):
                label = "HTTP threads (%s)" % comm
            elif comm == "inbox-writer":
                label = "inbox writer thread"
            else:
                label = "other threads (%s)" % comm
            out[label] = out.get(label, 0) + int(f[11]) + int(f[12])
            wakes[label] = wakes.get(label, 0) + voluntary_switches(pid,
                                                                    tid)
    return out, wakes


def voluntary_switches(pid, tid):
    try:
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_cpu(tree):
    return sum(c for c, _ in tree.values())


def cpu_delta(before, after):
    """Ticks used between two snapshots of a tree: processes that appeared
    count from zero, processes that went away count up to their last
    snapshot (their reaped time moves into the parent's cutime)."""
    total = 0
    for pid, (cpu, start) in after.items():
        b = before.get(pid)
        total += cpu - (b[0] if b and b[1] == start else 0)
    return total


def tree_memory(tree):
    """(RSS, PSS) in KiB summed over the tree."""
    rss = pss = 0
    for pid in tree:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def self_ticks():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * CLK


def children_ticks():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime + r.ru_stime) * CLK


def pin(cpu):
    if not cpu or cpu == "-" or not shutil.which("taskset"):
        return []
    return ["taskset", "-c", cpu]


# -- HTTP -----------------------------------------------------------------

def request(port, method, path, body=None, headers=None, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def payload(name, msg_id, text="menu", wa="905320000001"):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        t = f.read().strip()
    return (t.replace("@ID@", msg_id).replace("@WA@", wa)
            .replace("@TEXT@", text).encode())


def metrics(port):
    """walua's /metrics as {family: sum over its labels}."""
    status, body = request(port, "GET", "/metrics")
    if status != 200:
        raise BenchError("GET /metrics answered %d" % status)
    out = {}
    for line in body.decode().splitlines():
        if not line or line[0] == "#":
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(3))
    return out


class BenchError(Exception):
    pass


# -- servers ----------------------------------------------------------------

class Server:
    """One server process (and its tree), started pinned, stopped by PID."""

    def __init__(self, name):
        self.name = name
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="walua-bench-%s-" % name)
        self.log_path = os.path.join(self.dir, "server.log")
        self.proc = None
        self.logf = None
        self.walua = name.startswith("walua-")
        self.known = {}          # pid -> starttime, every tree member seen
        self.health = "/healthz"
        # walua serves /healthz and /metrics on its admin listener
        self.admin_port = free_port() if self.walua else self.port
        self.cpu = SERVER_CPU

    def command(self):
        n = self.name
        if n == "floor":
            self.health = "/"
            return [FLOOR, str(self.port), FLOOR_THREADS]
        if n == "node":
            return [shutil.which("node") or shutil.which("nodejs"),
                    os.path.join(HERE, "node_server.js"), str(self.port),
                    TOKEN]
        if n == "nginx-lua":
            moddir = nginx_moddir()
            with open(os.path.join(HERE, "nginx.conf")) as f:
                conf = f.read()
            ndk = os.path.join(moddir, "ndk_http_module.so")
            if not os.path.exists(ndk):
                conf = re.sub(r"(?m)^load_module @MODDIR@/ndk.*\n", "", conf)
            for k, v in (("@MODDIR@", moddir), ("@PREFIX@", self.dir),
                         ("@BENCHDIR@", HERE), ("@PORT@", str(self.port)),
                         ("@TOKEN@", TOKEN), ("@CJSON_CPATH@", cjson_cpath()),
                         ("@USER@", "user root;" if os.geteuid() == 0
                          else "")):
                conf = conf.replace(k, v)
            path = os.path.join(self.dir, "nginx.conf")
            with open(path, "w") as f:
                f.write(conf)
            return [nginx_bin(), "-p", self.dir, "-c", path,
                    "-e", os.path.join(self.dir, "error.log"),
                    "-g", "daemon off;"]
        m = re.fullmatch(r"walua-(normal|full|off)-w(\d+)", n)
        if not m:
            raise BenchError("unknown server %r" % n)
        shutil.copy(os.path.join(HERE, "walua_bot.lua"), self.dir)
        with open(os.path.join(HERE, "walua.conf.lua")) as f:
            conf = f.read()
        for k, v in (("@PORT@", str(self.port)),
                     ("@ADMIN_PORT@", str(self.admin_port)),
                     ("@WORKERS@", m.group(2)),
                     ("@DURABILITY@", m.group(1)), ("@TOKEN@", TOKEN)):
            conf = conf.replace(k, v)
        path = os.path.join(self.dir, "walua.conf.lua")
        with open(path, "w") as f:
            f.write(conf)
        return [WALUA, "serve", "-c", path]

    def start(self, timeout=20):
        argv = self.command()
        if not argv[0] or not os.path.exists(argv[0]):
            raise BenchError("%s: %s not found" % (self.name, argv[0]))
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(pin(self.cpu) + argv, cwd=self.dir,
                                     stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=self.logf)
        end = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError("%s exited with %d at start:\n%s" % (
                    self.name, self.proc.returncode, self.log_tail()))
            try:
                status, _ = request(self.admin_port, "GET", self.health,
                                    timeout=1)
                if status == 200:
                    break
            except OSError:
                pass
            if time.time() > end:
                raise BenchError("%s did not answer GET %s in %ds:\n%s" % (
                    self.name, self.health, timeout, self.log_tail()))
            time.sleep(0.05)
        self.remember()
        return self

    def remember(self):
        for pid, (_, start) in process_tree(self.proc.pid).items():
            self.known[pid] = start

    def tree(self, table=None):
        t = process_tree(self.proc.pid, table)
        for pid, (_, start) in t.items():
            self.known[pid] = start
        return t

    def log_tail(self, n=3000):
        text = ""
        for p in (self.log_path, os.path.join(self.dir, "error.log")):
            try:
                with open(p, "rb") as f:
                    text += f.read().decode("utf-8", "replace")[-n:]
            except OSError:
                pass
        return text or "(no log)"

    def stop(self, timeout=10):
        """SIGTERM the server by PID, SIGKILL after timeout; then SIGKILL
        any process of its tree still alive (by PID and start time)."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.remember()
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout)
            for pid, start in self.known.items():
                st = read_stat(pid)
                if st and st[2] == start:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        finally:
            if self.logf:
                self.logf.close()
                self.logf = None

    def cleanup(self, keep=False):
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


# -- one run ------------------------------------------------------------------

def sanity(srv, scen):
    """One authenticated delivery (2xx, one event, no duplicate) and, where
    there is auth, one with a wrong token (401)."""
    name, _ = SCENARIOS[scen]
    body = payload(name, "wamid.sanity" + uuid.uuid4().hex)
    h = {"Content-Type": "application/json",
         "Authorization": "Bearer " + TOKEN}
    status, resp = request(srv.port, "POST", "/webhooks/insider", body, h)
    if not 200 <= status < 300:
        raise BenchError("%s answered %d to a valid delivery: %r" % (
            srv.name, status, resp[:300]))
    if srv.name != "floor":
        try:
            doc = json.loads(resp)
        except ValueError:
            raise BenchError("%s answered non-JSON %r" % (srv.name, resp))
        if doc.get("events") != 1 or doc.get("duplicates", 0) != 0:
            raise BenchError("%s: expected one new event, got %r" % (
                srv.name, doc))
        h["Authorization"] = "Bearer wrong-" + TOKEN
        status, resp = request(srv.port, "POST", "/webhooks/insider",
                               body, h)
        if status != 401:
            raise BenchError("%s answered %d to a wrong token" % (
                srv.name, status))


def wait_backlog(srv, timeout):
    """Wait until walua handled every acknowledged event (bounded).
    Returns (metrics, seconds waited, events left)."""
    t0 = time.time()
    while True:
        m = metrics(srv.admin_port)
        left = (m.get("walua_inbox_pending", 0) +
                m.get("walua_inbox_inflight", 0))
        if left <= 0 or time.time() - t0 > timeout:
            return m, time.time() - t0, int(left)
        time.sleep(0.05)


def run_wrk(srv, scen):
    name, close = SCENARIOS[scen]
    argv = pin(WRK_CPU) + [
        shutil.which("wrk") or "wrk", "-t%d" % WRK_THREADS,
        "-c%d" % CONNECTIONS, "-d%gs" % SECONDS, "--latency",
        "-s", os.path.join(HERE, "post.lua"),
        "http://127.0.0.1:%d/webhooks/insider" % srv.port, "--",
        os.path.join(HERE, name), TOKEN, uuid.uuid4().hex[:8],
        "close" if close else "keep"]
    p = subprocess.run(argv, capture_output=True, text=True,
                       timeout=SECONDS + 60)
    out = p.stdout
    m = re.search(r"^BENCHJSON (\{.*\})$", out, re.M)
    if p.returncode != 0 or not m:
        raise BenchError("wrk failed (exit %d):\n%s\n%s" % (
            p.returncode, out[-2000:], p.stderr[-2000:]))
    return json.loads(m.group(1)), out


def measure(srv, scen):
    """One run of wrk against a started server; returns a result dict."""
    sanity(srv, scen)
    m0 = None
    if srv.walua:
        m0, _, left = wait_backlog(srv, DRAIN_SECONDS)
    table0 = scan()
    tree0, kern0 = srv.tree(table0), kernel_threads(table0)
    threads0, wakes0 = (thread_ticks(srv.proc.pid, tree0) if srv.walua
                        else ({}, {}))
    busy0, steal0 = machine_ticks()
    self0, kids0 = self_ticks(), children_ticks()
    t0 = time.time()

    w, wrk_text = run_wrk(srv, scen)

    t_wrk = time.time()
    r = {"server": srv.name, "scenario": scen}
    if srv.walua:
        m1 = metrics(srv.admin_port)
        m2, drain, left = wait_backlog(srv, DRAIN_SECONDS)
        acked = m1["walua_events_acked_total"] - m0["walua_events_acked_total"]
        handled_run = (m1["walua_events_handled_total"] -
                       m0["walua_events_handled_total"])
        handled = (m2["walua_events_handled_total"] -
                   m0["walua_events_handled_total"])
        dup = (m2.get("walua_events_duplicate_total", 0) -
               m0.get("walua_events_duplicate_total", 0))
        r.update(acked=acked, handled_run=handled_run, handled=handled,
                 handled_ratio=handled_run / acked if acked else 0.0,
                 handled_per_s=handled_run / (w["duration_us"] / 1e6),
                 drain_s=drain, backlog_left=left, duplicates=dup)
    t1 = time.time()
    table1 = scan()
    tree1, kern1 = srv.tree(table1), kernel_threads(table1)
    threads1, wakes1 = (thread_ticks(srv.proc.pid, tree1) if srv.walua
                        else ({}, {}))
    busy1, steal1 = machine_ticks()
    self1, kids1 = self_ticks(), children_ticks()
    rss, pss = tree_memory(tree1)

    if srv.proc.poll() is not None:
        raise BenchError("%s exited (%d) during the run:\n%s" % (
            srv.name, srv.proc.returncode, srv.log_tail()))
    server_ticks = cpu_delta(tree0, tree1)
    kernel_ticks = cpu_delta(kern0, kern1)
    wrk_ticks = kids1 - kids0
    window = t1 - t0
    others = ((busy1 - busy0) - server_ticks - wrk_ticks - kernel_ticks -
              (self1 - self0))
    reqs = w["requests"]
    dur = w["duration_us"] / 1e6
    r.update(
        requests=reqs, rps=reqs / dur if dur else 0.0,
        cpu_us=(server_ticks / CLK * 1e6 / reqs) if reqs else 0.0,
        server_cores=server_ticks / CLK / window,
        wrk_cores=wrk_ticks / CLK / (t_wrk - t0),
        p50_ms=w["p50_us"] / 1000.0, p99_ms=w["p99_us"] / 1000.0,
        rss_kib=rss, pss_kib=pss, window_s=window,
        others_cores=others / CLK / window,
        kernel_cores=kernel_ticks / CLK / window,
        steal_cores=(steal1 - steal0) / CLK / window,
        status_errors=w["status"],
        socket_errors=w["connect"] + w["read"] + w["write"],
        timeouts=w["timeout"])
    if reqs and threads1:
        r["threads_us"] = {k: (v - threads0.get(k, 0)) / CLK * 1e6 / reqs
                           for k, v in threads1.items()}
        r["threads_wakes"] = {k: (v - wakes0.get(k, 0)) / reqs
                              for k, v in wakes1.items()}
    if srv.walua:
        r["db_bytes"] = db_bytes_per_event(srv)
    r["disturbed"] = r["others_cores"] > MAX_OTHERS
    if reqs == 0:
        raise BenchError("%s %s: wrk completed no request:\n%s" % (
            srv.name, scen, wrk_text[-2000:]))
    return r


def db_bytes_per_event(srv):
    """The database's bytes in use per stored event, after a checkpoint
    (a PASSIVE one on a connection of our own, beside the running walua;
    the file's free pages are not counted)."""
    import sqlite3
    path = os.path.join(srv.dir, "bench.db")
    try:
        db = sqlite3.connect(path, timeout=5)
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            (n,) = db.execute("SELECT count(*) FROM events").fetchone()
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            (free,) = db.execute("PRAGMA freelist_count").fetchone()
            (size,) = db.execute("PRAGMA page_size").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return (pages - free) * size / n if n else None


def describe(r):
    s = ("  %-18s %-12s %9.0f req/s %7.1f us/req p50 %.2f ms p99 %.2f ms"
         " RSS %.1f MiB; server %.2f cores, wrk %.2f, others %.2f" % (
             r["server"], r["scenario"], r["rps"], r["cpu_us"], r["p50_ms"],
             r["p99_ms"], r["rss_kib"] / 1024.0, r["server_cores"],
             r["wrk_cores"], r["others_cores"]))
    s += " (steal %.2f of it; kernel threads %.2f)" % (
        r["steal_cores"], r["kernel_cores"])
    if "acked" in r:
        s += "; handled %.0f/s (%.2f of acked), backlog %.1f s" % (
            r["handled_per_s"], r["handled_ratio"], r["drain_s"])
    if r["status_errors"]:
        s += "; %d NON-2xx" % r["status_errors"]
    if r["socket_errors"] or r["timeouts"]:
        s += "; socket errors %d, timeouts %d" % (r["socket_errors"],
                                                  r["timeouts"])
    return s


def wait_quiet(srv):
    """Wait (at most QUIET_SECONDS) until other programs use less than
    MAX_OTHERS of a core, measured over half a second with the server idle.
    Returns the seconds waited."""
    t0 = time.time()
    said = False
    while True:
        table0 = scan()
        tree0, kern0 = srv.tree(table0), kernel_threads(table0)
        busy0, _ = machine_ticks()
        self0, a = self_ticks(), time.time()
        time.sleep(0.5)
        table1 = scan()
        tree1, kern1 = srv.tree(table1), kernel_threads(table1)
        busy1, _ = machine_ticks()
        others = ((busy1 - busy0) - cpu_delta(tree0, tree1) -
                  cpu_delta(kern0, kern1) - (self_ticks() - self0))
        load = others / CLK / (time.time() - a)
        waited = time.time() - t0
        if load <= MAX_OTHERS or waited >= QUIET_SECONDS:
            if said:
                print("  ... waited %.0f s (others now %.2f of a core)" % (
                    waited, load), flush=True)
            return waited
        if not said:
            print("  other programs use %.2f of a core: waiting up to %g s"
                  " for quiet" % (load, QUIET_SECONDS), flush=True)
            said = True


def run_with_retries(srv, scen, rnd):
    attempts = []
    for attempt in range(RETRIES + 1):
        if QUIET_SECONDS > 0:
            wait_quiet(srv)
        r = measure(srv, scen)
        r["round"] = rnd
        r["attempt"] = attempt + 1
        attempts.append(r)
        print(describe(r) + (" DISTURBED" if r["disturbed"] else ""),
              flush=True)
        if not r["disturbed"]:
            break
        if attempt < RETRIES:
            print("  %s %s: others used %.2f of a core (> %.2f): redo" % (
                srv.name, scen, r["others_cores"], MAX_OTHERS), flush=True)
    best = min(attempts, key=lambda a: a["others_cores"])
    best["redone"] = len(attempts) - 1
    best["attempts_others"] = [a["others_cores"] for a in attempts]
    return best


# -- report -------------------------------------------------------------------

def median(rows, key):
    vals = [r[key] for r in rows if key in r]
    return statistics.median(vals) if vals else None


def summarize(results):
    """{(server, scenario): medians and flags}."""
    groups = {}
    for r in results:
        groups.setdefault((r["server"], r["scenario"]), []).append(r)
    out = {}
    for k, rows in groups.items():
        s = {key: median(rows, key) for key in (
            "rps", "cpu_us", "p50_ms", "p99_ms", "rss_kib", "pss_kib",
            "handled_per_s", "handled_ratio", "drain_s", "server_cores",
            "wrk_cores", "others_cores", "steal_cores", "db_bytes")}
        acked = sum(r.get("acked", 0) for r in rows)
        s["handled_end_ratio"] = (sum(r.get("handled", 0) for r in rows) /
                                  acked if acked else None)
        s["rounds"] = len(rows)
        s["redone"] = sum(r.get("redone", 0) for r in rows)
        s["disturbed"] = sum(1 for r in rows if r["disturbed"])
        s["status_errors"] = sum(r["status_errors"] for r in rows)
        s["socket_errors"] = sum(r["socket_errors"] for r in rows)
        s["timeouts"] = sum(r["timeouts"] for r in rows)
        s["duplicates"] = sum(r.get("duplicates", 0) for r in rows)
        s["backlog_left"] = max(r.get("backlog_left", 0) for r in rows)
        for key in ("threads_us", "threads_wakes"):
            labels = sorted({k for r in rows for k in r.get(key, {})})
            s[key] = {k: statistics.median(
                [r[key].get(k, 0.0) for r in rows if key in r])
                for k in labels}
        out[k] = s
    return out


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def table(summary, order):
    head = ("| server | scenario | req/s | CPU µs/req | p50 ms | p99 ms | "
            "RSS MiB | PSS MiB | handled/s | handled/acked | notes |")
    lines = [head, "|" + "---|" * 11]
    for key in order:
        if key not in summary:
            continue
        s = summary[key]
        notes = []
        if s["wrk_cores"] is not None and s["wrk_cores"] > 0.95:
            notes.append("wrk-bound (%.2f cores)" % s["wrk_cores"])
        if s["redone"]:
            notes.append("%d redone" % s["redone"])
        if s["disturbed"]:
            notes.append("%d still disturbed" % s["disturbed"])
        if s["status_errors"]:
            notes.append("%d non-2xx" % s["status_errors"])
        if s["socket_errors"] or s["timeouts"]:
            notes.append("%d socket errors, %d timeouts" % (
                s["socket_errors"], s["timeouts"]))
        if s["duplicates"]:
            notes.append("%d duplicates" % s["duplicates"])
        if s["steal_cores"] is not None and s["steal_cores"] > 0.05:
            notes.append("steal %.2f" % s["steal_cores"])
        if s["backlog_left"]:
            notes.append("backlog %d left" % s["backlog_left"])
        if s["drain_s"] is not None and s["drain_s"] >= 0.5:
            notes.append("backlog %.1f s" % s["drain_s"])
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"
                     " %s |" % (
                         key[0], key[1], fmt(s["rps"], ".0f"),
                         fmt(s["cpu_us"], ".1f"), fmt(s["p50_ms"], ".2f"),
                         fmt(s["p99_ms"], ".2f"),
                         fmt(s["rss_kib"] / 1024.0, ".1f"),
                         fmt(s["pss_kib"] / 1024.0, ".1f"),
                         fmt(s["handled_per_s"], ".0f"),
                         fmt(s["handled_ratio"], ".2f"),
                         ", ".join(notes)))
    return lines


def ratios(summary, scenarios):
    lines = ["| %s vs | scenario | req/s ratio | CPU/req ratio | RSS ratio |"
             % MAIN, "|---|---|---|---|---|"]
    for scen in scenarios:
        w = summary.get((MAIN, scen))
        if not w:
            continue
        for peer in PEERS:
            p = summary.get((peer, scen))
            if not p:
                continue
            lines.append("| %s | %s | %.2f× | %.2f× | %.2f× |" % (
                peer, scen, w["rps"] / p["rps"], w["cpu_us"] / p["cpu_us"],
                w["rss_kib"] / p["rss_kib"]))
    return lines


def targets(summary):
    """[(target, met?, detail)] for the issue's targets (never asserted)."""
    out = []
    w = summary.get((MAIN, "text-ka"))
    ng = summary.get(("nginx-lua", "text-ka"))

    def ratio_target(name, value, limit, higher):
        met = value >= limit if higher else value <= limit
        if met:
            how = "met (%.2f×; margin %.0f%%)" % (
                value, abs(value - limit) / limit * 100)
        else:
            how = "MISSED by %.0f%% (%.2f× against %s %.2f×)" % (
                abs(value - limit) / limit * 100, value,
                "≥" if higher else "≤", limit)
        out.append((name, met, how))

    # the issue names both: Insider texts and Meta statuses, keep-alive
    for scen, what in (("text-ka", "keep-alive text"),
                       ("status-ka", "keep-alive status")):
        ws = summary.get((MAIN, scen))
        ns = summary.get(("nginx-lua", scen))
        if ws and ns:
            ratio_target("walua normal CPU per event ≤ 2.0× nginx+lua "
                         "(%s)" % what, ws["cpu_us"] / ns["cpu_us"], 2.0,
                         False)
            ratio_target("walua normal req/s ≥ 0.5× nginx+lua (%s)" % what,
                         ws["rps"] / ns["rps"], 0.5, True)
        if ws:
            hr = ws["handled_end_ratio"] or 0.0
            out.append(("handling keeps up: handled ≥ 0.99× acknowledged "
                        "at the end of the run (%s)" % what, hr >= 0.99,
                        ("met (%.3f)" % hr) if hr >= 0.99 else
                        "MISSED (%.3f)" % hr))
            p99 = ws["p99_ms"]
            out.append(("p99 ack latency ≤ 5 ms at %d connections (%s)" % (
                        CONNECTIONS, what), p99 <= 5.0,
                        ("met (%.2f ms)" % p99) if p99 <= 5.0 else
                        "MISSED by %.0f%% (%.2f ms)" % ((p99 - 5) / 5 * 100,
                                                        p99)))
    if w:
        if w.get("db_bytes"):
            b = w["db_bytes"]
            # commit 8bb3348 (events as JSON, dedup keys in a table of
            # their own) stored 1,286 bytes per event by this measure
            out.append(("database bytes per stored event ≤ 1,286 (commit "
                        "8bb3348, the same measure)", b <= 1286,
                        ("met (%.0f)" if b <= 1286 else "MISSED (%.0f)") % b))
    if w and ng:
        ratio_target("walua normal RSS under load ≤ 1.5× nginx+lua's",
                     w["rss_kib"] / ng["rss_kib"], 1.5, False)
    fulls = [(k[0], s) for k, s in summary.items()
             if k[0].startswith("walua-full-") and k[1] == "text-ka"]
    for name, s in sorted(fulls):
        v = s["rps"]
        hr = s["handled_end_ratio"] or 0.0
        ok = v >= 5000 and hr >= 0.99
        out.append(("durability full ≥ 5,000 events/s acknowledged, "
                    "handlers keeping up (%s)" % name, ok,
                    "%s (%.0f events/s; handled/acked at the end %.3f)" % (
                        "met" if ok else "MISSED", v, hr)))
    return out


def sh(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def environment():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    settings = " ".join("%s=%s" % (k, os.environ[k]) for k in sorted(
        os.environ) if k.startswith("BENCH_") and k not in ("BENCH_COMMAND", "BENCH_FLOOR")
        and os.environ[k].strip())
    command = os.environ.get("BENCH_COMMAND") or " ".join(
        ["python3"] + sys.argv)
    return [
        "- date: %s" % time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "- command: `%s`%s" % (command, (" with `%s`" % settings)
                                if settings else ""),
        "- `uname -a`: %s" % sh(["uname", "-a"]),
        "- CPU: %s; nproc %d; server pinned to CPU %s, wrk to CPU %s"
        " (%d thread%s, %d connections)" % (
            cpu, os.cpu_count(), SERVER_CPU, WRK_CPU, WRK_THREADS,
            "s" if WRK_THREADS > 1 else "", CONNECTIONS),
        "- %d round%s of %g s per run; medians; a run is redone (at most %d"
        " times) when other programs (or the hypervisor's steal) used more"
        " than %.2f of a core" % (
            ROUNDS, "s" if ROUNDS > 1 else "", SECONDS, RETRIES, MAX_OTHERS),
        "- versions: walua %s; %s; node %s; %s; libmicrohttpd %s" % (
            sh([WALUA, "version"]), sh([nginx_bin() or "nginx", "-v"]),
            sh([shutil.which("node") or "node", "-v"]),
            sh(["wrk", "-v"]).split(" [")[0],
            sh(["pkg-config", "--modversion", "libmicrohttpd"])),
    ]


def report(results, errors, order, scenarios):
    summary = summarize(results)
    lines = ["# walua benchmark%s" % (" (smoke)" if SMOKE else ""), ""]
    lines += environment() + [""]
    lines += table(summary, order) + [""]
    lines += ["CPU µs/req: CPU time (user + system) of the server's whole "
              "process tree per request, over wrk's run and (walua) until "
              "the backlog was handled. RSS: VmRSS summed over the tree "
              "after the run (PSS: shared pages counted once). handled/s "
              "and handled/acked: walua_events_handled_total during wrk's "
              "run. p50/p99: wrk's latency to the 200 (for walua: "
              "committed).", ""]
    lines += ratios(summary, scenarios) + [""]
    brk = [k for k in order if k in summary and summary[k]["threads_us"]]
    if brk:
        lines += ["walua's CPU µs/req by thread (medians; a thread that "
                  "exits during a run is not counted here):", ""]
        for k in brk:
            lines.append("- %s %s: %s" % (k[0], k[1], ", ".join(
                "%s %.1f" % (label, v) for label, v in sorted(
                    summary[k]["threads_us"].items(),
                    key=lambda kv: -kv[1]))))
        lines += ["", "walua's wake-ups per 100 requests by thread "
                  "(voluntary context switches, medians: each is a thread "
                  "that slept and was woken, by a hand-off or by the "
                  "network; fewer means each wake-up found more work):",
                  ""]
        for k in brk:
            lines.append("- %s %s: %s" % (k[0], k[1], ", ".join(
                "%s %.1f" % (label, v * 100) for label, v in sorted(
                    summary[k].get("threads_wakes", {}).items(),
                    key=lambda kv: -kv[1]) if v > 0)))
        lines += [""]
    dbb = [k for k in order if k in summary and summary[k].get("db_bytes")]
    if dbb:
        lines += ["Database bytes in use per stored event, after a "
                  "checkpoint (the whole database over its events; an "
                  "Insider text delivery is about 460 bytes):", ""]
        for k in dbb:
            lines.append("- %s %s: %.0f" % (k[0], k[1],
                                            summary[k]["db_bytes"]))
        lines += [""]
    lines += decoding(scenarios)
    tg = targets(summary)
    if tg:
        lines += ["Targets (reported, not asserted; %s):" % MAIN, ""]
        lines += ["- %s: %s" % (name, how) for name, _, how in tg]
        lines += [""]
    redone = [r for r in results if r.get("redone")]
    if redone:
        lines += ["Runs redone because other programs used more than %.2f "
                  "of a core (the least disturbed attempt is kept):" %
                  MAX_OTHERS, ""]
        for r in redone:
            lines.append("- round %d %s %s: others (with steal) %s%s" % (
                r["round"], r["server"], r["scenario"], ", ".join(
                    "%.2f" % o for o in r["attempts_others"]),
                "; still disturbed" if r["disturbed"] else ""))
        lines += [""]
    if errors:
        lines += ["Errors:", ""] + ["- " + e.replace("\n", "\n  ")
                                    for e in errors] + [""]
    text = "\n".join(lines)
    print("\n" + text)
    write_results(main=text)


def decoding(scenarios):
    """Lines on what decoding one delivery costs alone (decode.c), both
    ways, for each keep-alive scenario's payload; none without decode."""
    if not os.path.exists(DECODE):
        return []
    count = "20000" if SMOKE else "200000"
    lines = []
    for scen in scenarios:
        name, close = SCENARIOS[scen]
        if close:
            continue
        runs = []
        for _ in range(1 if SMOKE else 3):
            p = subprocess.run(["taskset", "-c", SERVER_CPU, DECODE,
                                os.path.join(HERE, name), count],
                               capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                raise BenchError("decode: %s" % p.stderr.strip())
            f = p.stdout.split()
            runs.append((float(f[1]), float(f[3])))
        c = statistics.median(r[0] for r in runs)
        lua = statistics.median(r[1] for r in runs)
        lines.append("- %s (%s): %.2f µs with the envelope read in C, "
                     "%.2f µs with normalize.lua reading it" % (
                         scen, name, c, lua))
    if not lines:
        return []
    return ["Decoding alone (tests/bench/decode.c: event_decode %s times "
            "each way, on 1,000 bodies made from the payload, pinned to "
            "CPU %s; CPU µs per body, median of %d runs): the JSON decode, "
            "the events and their packing, as the HTTP thread does them. "
            "src/envelope.c reads Meta's envelope in C; "
            "lua/walua/normalize.lua reads every other body:" % (
                count, SERVER_CPU, 1 if SMOKE else 3), ""] + lines + [""]


IO_HEAD = "## I/O scenario"
# A section written by hand from a profile (tests/bench/README.md, "Where
# the time goes"): kept as it is by every run, between the two parts.
PROFILE_HEAD = "## Where the time goes"
# bench_pg.py's section (walua on PostgreSQL), kept by bench.py's runs
PG_HEAD = "## PostgreSQL: one and two instances"


def split_sections(text, heads):
    """{head or "": the text from that heading to the next of heads}."""
    at = sorted((i, h) for h in heads for i in [
        0 if text.startswith(h) else text.find("\n" + h) + 1]
        if i > 0 or text.startswith(h))
    parts, prev, prev_head = {}, 0, ""
    for i, h in at:
        parts[prev_head] = text[prev:i].strip("\n")
        prev, prev_head = i, h
    parts[prev_head] = text[prev:].strip("\n")
    return parts


def write_results(main=None, io=None, pg=None):
    """Write RESULTS: the wrk table (main), the hand-written profile
    section (kept) and the I/O scenario's section (io, which starts with
    IO_HEAD).  A part not given is kept from the file as it was, so a run
    of one part leaves the other alone."""
    try:
        with open(RESULTS, encoding="utf-8") as f:
            old = f.read()
    except OSError:
        old = ""
    parts = split_sections(old, (IO_HEAD, PROFILE_HEAD, PG_HEAD))
    main = (parts.get("", "") if main is None else main).strip("\n")
    io = (parts.get(IO_HEAD, "") if io is None else io).strip("\n")
    pg = (parts.get(PG_HEAD, "") if pg is None else pg).strip("\n")
    text = "\n\n".join(p for p in (main, parts.get(PROFILE_HEAD, "").strip(
        "\n"), io, pg) if p) + "\n"
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w", encoding="utf-8") as f:
        f.write(text)
    rel = os.path.relpath(RESULTS, ROOT)
    print("written to %s" % (RESULTS if rel.startswith("..") else rel))


# -- the I/O scenario -----------------------------------------------------------
#
# Handlers that wait on a slow API: IO_EVENTS text messages, each in its own
# conversation, posted by io_post.py as fast as it can; every message makes
# one GET to io_backend, which answers after the delay.  walua runs with
# its defaults (workers, handler concurrency) and walua_io_bot.lua; Node
# runs io_node.js (fetch after answering 200).  The backend and the client
# run pinned to BENCH_WRK_CPU, the server under test to BENCH_SERVER_CPU.

class IoBackend(Server):
    """io_backend.c: answers every request after delay_ms."""

    def __init__(self, delay):
        super().__init__("io-backend")
        self.delay = delay
        self.cpu = WRK_CPU
        self.health = "/stats"

    def command(self):
        # it stops by itself after the longest a run may take
        return [IO_BACKEND, str(self.port), str(self.delay),
                str(int(IO_TIMEOUT + 120))]

    def url(self):
        return "http://127.0.0.1:%d/api/slow" % self.port

    def stats(self):
        status, body = request(self.port, "GET", "/stats")
        if status != 200:
            raise BenchError("backend: GET /stats answered %d" % status)
        return json.loads(body)

    def reset(self):
        request(self.port, "POST", "/reset")


class IoServer(Server):
    """The server under test in the I/O scenario: "walua", "node", or
    "walua-cN": walua with limits.handler_concurrency = N (the default is
    256 per worker, so 512 in flight with the default 2 workers)."""

    def __init__(self, kind, backend_url):
        super().__init__(kind)
        self.walua = kind.startswith("walua")
        self.concurrency = (int(kind[len("walua-c"):])
                            if kind.startswith("walua-c") else None)
        self.backend_url = backend_url
        self.admin = False

    def command(self):
        if self.name == "node":
            return [shutil.which("node") or shutil.which("nodejs"),
                    os.path.join(HERE, "io_node.js"), str(self.port), TOKEN,
                    self.backend_url]
        with open(os.path.join(HERE, "walua_io_bot.lua")) as f:
            bot = f.read().replace("@BACKEND@", self.backend_url)
        with open(os.path.join(self.dir, "walua_io_bot.lua"), "w") as f:
            f.write(bot)
        return self.walua_config()

    def walua_config(self):
        """Write the run's walua.conf.lua and return the serve command.
        /metrics and /healthz live on the admin listener (admin_listen)
        in a walua that has the key: then it is set to a free port; a
        walua without it (`walua check` refuses the key) serves them on
        the main port, and the line is left out."""
        with open(os.path.join(HERE, "walua_io.conf.lua")) as f:
            text = f.read()
        path = os.path.join(self.dir, "walua.conf.lua")

        def write(admin):
            conf = text
            if self.concurrency:
                admin += ("\n\tlimits = { handler_concurrency = %d },"
                          % self.concurrency)
            for k, v in (("@PORT@", str(self.port)), ("@TOKEN@", TOKEN),
                         ("@ADMIN@", admin)):
                conf = conf.replace(k, v)
            with open(path, "w") as f:
                f.write(conf)

        port = free_port()
        write('\n\tadmin_listen = "127.0.0.1:%d",' % port)
        try:
            p = subprocess.run([WALUA, "check", "-c", path], cwd=self.dir,
                               capture_output=True, text=True, timeout=30)
            self.admin = p.returncode == 0
        except subprocess.TimeoutExpired:
            self.admin = False
        if self.admin:
            self.admin_port = port
        else:
            write("")
        return [WALUA, "serve", "-c", path]

    def progress(self):
        """Events finished so far (ok or not), cumulative."""
        if self.walua:
            return metrics(self.admin_port).get(
                "walua_events_handled_total", 0)
        st = self.node_stats()
        return st["handled"] + st["failed"]

    def node_stats(self):
        status, body = request(self.port, "GET", "/stats")
        if status != 200:
            raise BenchError("node: GET /stats answered %d" % status)
        return json.loads(body)

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def handled_lines(self, offset, until=None):
        """walua: (ok, failed, Unix time of the last "io handled" line, the
        last failure's line) from the log after offset, up to the Unix
        time until."""
        ok = failed = 0
        last, fail_line = None, None
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            for raw in f:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                t = log_time(line.get("ts", ""))
                if until is not None and t is not None and t > until:
                    continue
                if line.get("msg") == "io handled":
                    ok += 1
                    if t is not None and (last is None or t > last):
                        last = t
                elif line.get("msg") == "io failed":
                    failed += 1
                    fail_line = raw.decode("utf-8", "replace").strip()
        return ok, failed, last, fail_line


def log_time(ts):
    """walua's "ts" (2026-01-02T03:04:05.678Z) as Unix seconds."""
    m = re.fullmatch(r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)(\.\d+)?Z", ts)
    if not m:
        return None
    g = [int(x) for x in m.groups()[:6]]
    return calendar.timegm(tuple(g) + (0, 0, 0)) + float(m.group(7) or 0)


def tree_rss(tree):
    """VmRSS in KiB summed over a tree."""
    rss = 0
    for pid in tree:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return rss


def io_body(msg_id, wa):
    return payload("payload_text.json", msg_id, "menu", wa)


def io_sanity(srv, backend):
    """One delivery (2xx, one event) that must be handled, the backend
    answering 200; one with a wrong token (401).  Then zero the counts."""
    h = {"Content-Type": "application/json",
         "Authorization": "Bearer " + TOKEN}
    body = io_body("wamid.iosanity" + uuid.uuid4().hex, "905339999999")
    before = srv.progress()
    status, resp = request(srv.port, "POST", "/webhooks/insider", body, h)
    if not 200 <= status < 300:
        raise BenchError("%s answered %d to a valid delivery: %r" % (
            srv.name, status, resp[:300]))
    doc = json.loads(resp)
    if doc.get("events") != 1 or doc.get("duplicates", 0) != 0:
        raise BenchError("%s: expected one new event, got %r" % (
            srv.name, doc))
    h["Authorization"] = "Bearer wrong-" + TOKEN
    status, _ = request(srv.port, "POST", "/webhooks/insider", body, h)
    if status != 401:
        raise BenchError("%s answered %d to a wrong token" % (
            srv.name, status))
    end = time.time() + 15
    while srv.progress() < before + 1:
        if time.time() > end:
            raise BenchError("%s: the sanity event was not handled in 15 s:"
                             "\n%s" % (srv.name, srv.log_tail()))
        time.sleep(0.05)
    if srv.walua:
        ok, failed, _, line = srv.handled_lines(0)
        if failed or not ok:
            raise BenchError("walua: the sanity event's call failed: %s" %
                             line)
    else:
        st = srv.node_stats()
        if st["failed"]:
            raise BenchError("node: the sanity event's fetch failed: %s" %
                             st["last_error"])
        request(srv.port, "POST", "/reset")
    if backend.stats()["requests"] != 1:
        raise BenchError("%s: the sanity event did not reach the backend" %
                         srv.name)
    backend.reset()


def io_measure(srv, backend, label):
    io_sanity(srv, backend)
    time.sleep(0.5)                      # let the sanity event settle
    rss_idle = tree_rss(srv.tree())
    done0 = srv.progress()
    log0 = srv.log_size() if srv.walua else 0
    argv = pin(WRK_CPU) + [sys.executable, os.path.join(HERE, "io_post.py"),
                           str(srv.port), TOKEN, str(IO_EVENTS),
                           str(IO_BATCH), str(IO_CONNECTIONS),
                           uuid.uuid4().hex[:8]]
    t0 = time.time()
    poster = subprocess.Popen(argv, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    rss_peak, finished, post = rss_idle, False, None
    expected = IO_EVENTS     # until the client says how many were acked
    try:
        while True:
            rss_peak = max(rss_peak, tree_rss(srv.tree()))
            done = srv.progress() - done0
            if srv.proc.poll() is not None:
                raise BenchError("%s exited (%d) during the run:\n%s" % (
                    srv.name, srv.proc.returncode, srv.log_tail()))
            if post is None and poster.poll() is not None:
                post = io_post_result(poster)
                expected = post["acked_events"]
            if post is not None and done >= expected:
                finished = True
                break
            if time.time() - t0 > IO_TIMEOUT:
                break
            time.sleep(0.05)
        t_end = time.time()
        if post is None:
            try:
                poster.wait(10)
            except subprocess.TimeoutExpired:
                raise BenchError("the client did not finish posting in "
                                 "%g s" % (IO_TIMEOUT + 10))
            post = io_post_result(poster)
    finally:
        if poster.poll() is None:
            poster.kill()
            poster.wait()
    bst = backend.stats()
    if srv.walua:
        ok, failed, last, fail_line = srv.handled_lines(log0, t_end)
        last_error = fail_line
    else:
        st = srv.node_stats()
        ok, failed = st["handled"], st["failed"]
        last = st["last_handled_ms"] / 1000.0 if ok else None
        last_error = st["last_error"]
    first = post["first_post"]
    non2xx = sum(v for k, v in post["statuses"].items()
                 if not 200 <= int(k) < 300)
    r = {"server": srv.name, "delay": label, "events": IO_EVENTS,
         "handled": ok, "failed": failed, "finished": finished and
         ok >= IO_EVENTS, "elapsed_s": t_end - t0,
         "handled_per_s": (ok / (last - first)) if ok and last and
         last > first else 0.0,
         "post_s": (post["last_ack"] - first) if post["last_ack"] else None,
         "ack_to_handled_s": (last - post["last_ack"]) if last and
         post["last_ack"] else None,
         "max_in_flight": bst["max_open"], "backend_requests":
         bst["requests"], "rss_idle_kib": rss_idle, "rss_peak_kib": rss_peak,
         "acked_events": post["acked_events"], "requests": post["requests"],
         "non2xx": non2xx, "post_errors": post["errors"],
         "post_error": post["last_error"], "last_error": last_error,
         "admin": getattr(srv, "admin", False)}
    r["kib_per_in_flight"] = ((rss_peak - rss_idle) / bst["max_open"]
                              if bst["max_open"] else None)
    return r


def io_post_result(poster):
    """The finished client's IOPOST line as a dict."""
    out, err = poster.communicate()
    m = re.search(r"^IOPOST (\{.*\})$", out, re.M)
    if poster.returncode != 0 or not m:
        raise BenchError("the client failed (exit %d):\n%s\n%s" % (
            poster.returncode, out[-2000:], err[-2000:]))
    return json.loads(m.group(1))


def io_describe(r):
    s = "  %-6s %-6s " % (r["server"], r["delay"])
    if r["finished"]:
        s += "%d events handled: %.0f/s; last ack -> last handled %.3f s" % (
            r["handled"], r["handled_per_s"], r["ack_to_handled_s"])
    else:
        s += ("DID NOT FINISH: %d of %d handled in %.0f s (%.1f/s)" % (
            r["handled"], r["events"], r["elapsed_s"], r["handled_per_s"]))
    s += "; posted in %s s; max in flight %d; RSS %.1f -> %.1f MiB" % (
        fmt(r["post_s"], ".2f"), r["max_in_flight"],
        r["rss_idle_kib"] / 1024.0, r["rss_peak_kib"] / 1024.0)
    if r["failed"]:
        s += "; %d calls FAILED (%s)" % (r["failed"], r["last_error"])
    if r["non2xx"] or r["post_errors"]:
        s += "; %d non-2xx, %d client errors (%s)" % (
            r["non2xx"], r["post_errors"], r["post_error"])
    return s


def io_run(kind, label, errors):
    """One server against one backend delay; returns a result or None."""
    backend = IoBackend(delay_ms(label))
    srv = None
    failed = False
    try:
        backend.start()
        srv = IoServer(kind, backend.url())
        srv.start()
        r = io_measure(srv, backend, label)
        print(io_describe(r), flush=True)
        if r["non2xx"] or r["post_errors"]:
            errors.append("%s %s: %d non-2xx answers, %d client errors "
                          "(%s)" % (kind, label, r["non2xx"],
                                    r["post_errors"], r["post_error"]))
        return r
    except (BenchError, OSError, KeyError, ValueError,
            subprocess.TimeoutExpired) as e:
        failed = True
        msg = "I/O %s %s: %s" % (kind, label, e)
        print("ERROR " + msg, flush=True)
        errors.append(msg)
        for s in (srv, backend):
            if s is not None:
                errors.append("%s: its folder is kept: %s" % (s.name,
                                                             s.dir))
        return None
    finally:
        for s in (srv, backend):
            if s is not None:
                # walua's stop may spend limits.shutdown_timeout_ms (10 s)
                # on events still queued
                s.stop(15)
                s.cleanup(keep=failed)


def io_targets(res):
    """[(target, how)] for the issue's I/O targets (never asserted)."""
    out = []
    w100, n100 = res.get(("walua", "100ms")), res.get(("node", "100ms"))
    w1 = res.get(("walua", "1s"))
    # 1,000 in flight takes more than the default 2 x 256 slots: the
    # walua-c512 row (handler_concurrency = 512) shows what they cost
    wbig = res.get(("walua-c512", "1s"))

    def dnf(r):
        return " (did not finish: %d of %d in %.0f s)" % (
            r["handled"], r["events"], r["elapsed_s"]) if not r[
                "finished"] else ""

    if w100 and n100 and n100["handled_per_s"]:
        v = w100["handled_per_s"] / n100["handled_per_s"]
        out.append(("100 ms backend: walua's handled events/s ≥ 0.9× "
                    "Node's", "met (%.2f×: %.0f against %.0f)" % (
                        v, w100["handled_per_s"], n100["handled_per_s"])
                    if v >= 0.9 and w100["finished"] else
                    "MISSED (%.2f×: %.0f/s against %.0f/s)%s" % (
                        v, w100["handled_per_s"], n100["handled_per_s"],
                        dnf(w100))))
    if w100:
        v = w100["ack_to_handled_s"]
        out.append(("100 ms backend: last event handled ≤ 0.5 s after the "
                    "last ack", "met (%.3f s)" % v if w100["finished"] and
                    v <= 0.5 else "MISSED (%s)%s" % (
                        "%.1f s" % v if v is not None and w100["finished"]
                        else "more than %.0f s" % (
                            w100["elapsed_s"] - (w100["post_s"] or 0)),
                        dnf(w100))))
    if w1:
        v = w1["max_in_flight"]
        out.append(("1 s backend: ≥ 1,000 events in flight at once",
                    ("met (%d)" if v >= 1000 else "MISSED (%d)") % v))
        v = w1["handled_per_s"]
        out.append(("1 s backend: ≥ 400 events/s handled", (
            "met (%.0f/s)" % v) if v >= 400 and w1["finished"] else
            "MISSED (%.1f/s)%s" % (v, dnf(w1))))
        if wbig:
            v = wbig["max_in_flight"]
            out.append(("1 s backend, handler_concurrency = 512: ≥ 1,000 "
                        "events in flight at once",
                        ("met (%d)" if v >= 1000 else "MISSED (%d)") % v))
        m = wbig if wbig and wbig["max_in_flight"] >= 1000 else w1
        k, n = m["kib_per_in_flight"], m["max_in_flight"]
        if k is None:
            how = "not measured (nothing in flight)"
        elif n < 1000:
            how = ("not assessed: %.0f KiB per event in flight, but only %d"
                   " in flight (the target is for 1,000)" % (k, n))
        else:
            how = ("met (%.1f KiB)" if k <= 40 else "MISSED (%.1f KiB)") % k
        out.append(("memory: ≤ 40 KiB of RSS per event in flight (1 s "
                    "backend, against the idle daemon)", how))
    return out


def io_report(results, errors):
    res = {(r["server"], r["delay"]): r for r in results}
    admin = any(r["admin"] for r in results
                if r["server"].startswith("walua"))
    command = os.environ.get("BENCH_COMMAND") or " ".join(
        ["python3"] + sys.argv)
    settings = " ".join("%s=%s" % (k, os.environ[k]) for k in sorted(
        os.environ) if k.startswith("BENCH_") and k not in (
            "BENCH_COMMAND", "BENCH_FLOOR", "BENCH_IO_BACKEND")
        and os.environ[k].strip())
    lines = [IO_HEAD + ": handlers that wait on a slow API", "",
             "- date: %s; command: `%s`%s" % (
                 time.strftime("%Y-%m-%d %H:%M:%S %Z"), command,
                 (" with `%s`" % settings) if settings else ""),
             "- versions: %s; node %s; nproc %d; server pinned to CPU"
             " %s, backend and client to CPU %s" % (
                 sh([WALUA, "version"]),
                 sh([shutil.which("node") or "node", "-v"]),
                 os.cpu_count(), SERVER_CPU, WRK_CPU),
             "- %d text messages in %d conversations, %d per POST over %d "
             "keep-alive connections; each handler makes one GET to a local"
             " backend (`io_backend.c`) that answers after the delay; walua"
             " with its defaults (workers, handler concurrency; /metrics"
             " read from %s), Node with `fetch` after answering 200; a run"
             " is stopped %g s after its first POST" % (
                 IO_EVENTS, IO_EVENTS, IO_BATCH, IO_CONNECTIONS,
                 "its admin port" if admin else "the main port", IO_TIMEOUT),
             "",
             "| backend | server | handled | handled/s | posted in s | "
             "last ack → last handled s | max in flight | RSS idle MiB | "
             "RSS peak MiB | KiB per event in flight | notes |",
             "|" + "---|" * 11]
    for r in results:
        notes = []
        if not r["finished"]:
            notes.append("did not finish: stopped after %.0f s" %
                         r["elapsed_s"])
        if r["failed"]:
            notes.append("%d calls failed" % r["failed"])
        if r["non2xx"]:
            notes.append("%d non-2xx" % r["non2xx"])
        if r["post_errors"]:
            notes.append("%d client errors" % r["post_errors"])
        lines.append("| %s | %s | %d of %d | %.1f | %s | %s | %d | %.1f | "
                     "%.1f | %s | %s |" % (
                         r["delay"], r["server"], r["handled"], r["events"],
                         r["handled_per_s"], fmt(r["post_s"], ".2f"),
                         fmt(r["ack_to_handled_s"], ".3f")
                         if r["finished"] else "-",
                         r["max_in_flight"], r["rss_idle_kib"] / 1024.0,
                         r["rss_peak_kib"] / 1024.0,
                         fmt(r["kib_per_in_flight"], ".0f"),
                         ", ".join(notes)))
    lines += ["", "handled/s: events whose call was answered 200, divided "
              "by the time from the first POST to the last of them "
              "(walua: the \"io handled\" log lines' ts; Node: its own "
              "clock). max in flight: the most requests the backend held "
              "at once. RSS: VmRSS summed over the server's process tree "
              "(walua: the supervisor and its walua-worker processes), "
              "idle after one event and at its peak during the run "
              "(sampled every 50 ms); KiB per event in flight = (peak - "
              "idle) / max in flight. The peak also holds what taking in "
              "the run's events costs (walua's inbox and queue, Node's "
              "sockets), so that figure is an upper bound.", ""]
    tg = io_targets(res)
    if tg:
        lines += ["Targets (reported, not asserted):", ""]
        lines += ["- %s: %s" % t for t in tg] + [""]
    if errors:
        lines += ["Errors:", ""] + ["- " + e.replace("\n", "\n  ")
                                    for e in errors] + [""]
    text = "\n".join(lines)
    print("\n" + text)
    write_results(io=text)


def run_io(delays):
    """The I/O scenario for each delay: each server in IO_SERVERS."""
    results, errors = [], []
    print("I/O scenario: %d events, backend delays %s, servers %s" % (
        IO_EVENTS, " ".join(delays), " ".join(IO_SERVERS)), flush=True)
    for label in delays:
        for kind in IO_SERVERS:
            if kind == "node" and not peer_available("node"):
                if not SMOKE:       # the smoke runs what is installed
                    errors.append("node: not installed (make bench "
                                  "installs BENCH_DEBS)")
                continue
            r = io_run(kind, label, errors)
            if r:
                results.append(r)
    if results or errors:
        io_report(results, errors)
    return errors


# -- main -------------------------------------------------------------------

def check_tools(plan):
    need = (["wrk"] if any(n != "io" for n, _ in plan) else []) + (
        ["taskset"] if SERVER_CPU not in ("", "-") else [])
    for t in need:
        if not shutil.which(t):
            sys.exit("bench: %s is not installed (make bench installs "
                     "BENCH_DEBS)" % t)
    if os.cpu_count() < 2 and SERVER_CPU == "0" and WRK_CPU == "1":
        sys.exit("bench: needs 2 CPUs (server on 0, wrk on 1); set "
                 "BENCH_SERVER_CPU=- BENCH_WRK_CPU=- to run unpinned")
    for name, _ in plan:
        if name == "floor" and not os.path.exists(FLOOR):
            sys.exit("bench: %s not built (make bench builds it)" % FLOOR)
        if (name.startswith("walua-") or name == "io") and \
                not os.path.exists(WALUA):
            sys.exit("bench: %s not built" % WALUA)
        if name == "io" and not os.path.exists(IO_BACKEND):
            sys.exit("bench: %s not built (make bench builds it)" %
                     IO_BACKEND)


def raise_nofile():
    """The I/O scenario holds thousands of sockets: lift the soft limit on
    open files to the hard one (the servers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass


def main():
    plan = parse_plan(os.environ["BENCH_PLAN"]) if os.environ.get(
        "BENCH_PLAN", "").strip() else default_plan()
    check_tools(plan)
    raise_nofile()
    io_delays = [d for n, ss in plan if n == "io" for d in ss]
    plan = [(n, ss) for n, ss in plan if n != "io"]
    order = [(n, s) for n, ss in plan for s in ss]
    scenarios = [s for s in SCENARIOS if any(s in ss for _, ss in plan)]
    if plan:
        print("bench: %d round%s of %g s; plan: %s" % (
            ROUNDS, "s" if ROUNDS > 1 else "", SECONDS,
            " ".join("%s:%s" % (n, ",".join(ss)) for n, ss in plan +
                     ([("io", io_delays)] if io_delays else []))),
            flush=True)
    results, errors = [], []
    failed_servers = set()
    for rnd in range(1, ROUNDS + 1 if plan else 1):
        print("round %d/%d" % (rnd, ROUNDS), flush=True)
        for name, scens in plan:
            if name in failed_servers:
                continue
            if name in ("nginx-lua", "node") and not peer_available(name):
                errors.append("%s: not installed (make bench installs "
                              "BENCH_DEBS)" % name)
                failed_servers.add(name)
                continue
            srv = Server(name)
            failed = False
            try:
                srv.start()
                for scen in scens:
                    results.append(run_with_retries(srv, scen, rnd))
            except (BenchError, OSError, KeyError,
                    subprocess.TimeoutExpired) as e:
                failed = True
                msg = "%s (round %d): %s" % (name, rnd, e)
                print("ERROR " + msg, flush=True)
                errors.append(msg)
                errors.append("%s: its folder is kept: %s" % (name, srv.dir))
                failed_servers.add(name)
            finally:
                srv.stop()
                srv.cleanup(keep=failed)
    if plan:
        report(results, errors, order, scenarios)
    if io_delays:
        errors += run_io(io_delays)
    bad = [k for k, s in summarize(results).items() if s["status_errors"]]
    if bad:
        print("FAIL: non-2xx answers from %s" % ", ".join(
            "%s %s" % k for k in bad))
    if errors:
        print("FAIL: %d error%s (above)" % (len(errors),
                                           "s" if len(errors) > 1 else ""))
    return 1 if errors or bad else 0


if __name__ == "__main__":
    sys.exit(main())
