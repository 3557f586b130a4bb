"""Running walua like a daemon (README, "Running in production"): make
install, the systemd units, socket activation, sd_notify readiness, the
database lock, SIGUSR1 log reopening, the SIGUSR2 binary upgrade under
load, and `walua run inbox backup`.

Every process is started with a timeout and ended by its PID: after an
upgrade the daemon is a process the test did not start, found by the pid
walua writes into its database's lock file.
"""
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time

from harness import (ROOT, TOKEN, WALUA, Daemon, LOG_EVERY_EVENT, children,
                     proc_stat, text_body, walua)


def lock_pid(d):
    with open(os.path.join(d.dir, "walua.db.lock")) as f:
        return int(f.read().strip() or 0)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (the harness's own child, not waited for yet) is not alive
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def wait_gone(pid, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def end_pid(pid):
    """SIGTERM a daemon the test did not start itself, SIGKILL if need be."""
    if pid and alive(pid):
        os.kill(pid, signal.SIGTERM)
        if not wait_gone(pid, 15):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 5)


def wait_new_pid(d, old, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if d.database is not None:      # PostgreSQL: no lock file
                m = re.findall(r"upgrade: pid (\d+) is ready", d.log_text())
                pid = int(m[-1]) if m else 0
            else:
                pid = lock_pid(d)
        except (OSError, ValueError):
            pid = 0
        if pid and pid != old:
            return pid
        time.sleep(0.05)
    raise AssertionError("no new walua took the lock:\n" +
                         d.log_text()[-3000:])


def post_raw(port, body, timeout=10):
    """One delivery on a new connection; the status, or an error name."""
    req = ("POST /webhooks/insider HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
           "Content-Length: %d\r\nConnection: close\r\n\r\n"
           % (TOKEN, len(body))).encode() + body
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(req)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    if not data.startswith(b"HTTP/1.1 "):
        return "no answer"
    return int(data[9:12])


# make install ---------------------------------------------------------
def test_make_install_puts_every_file_where_the_man_page_says():
    dest = tempfile.mkdtemp(prefix="walua-install-")
    try:
        p = subprocess.run(["make", "-C", ROOT, "--no-print-directory",
                            "install", "DESTDIR=" + dest,
                            "PREFIX=/usr/local", "BIN=" + WALUA],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        with open(os.path.join(ROOT, "contrib", "walua.8")) as f:
            man = f.read()
        files = ["/usr/local/bin/walua",
                 "/usr/local/share/man/man8/walua.8",
                 "/usr/local/share/doc/walua/walua.conf.lua",
                 "/usr/local/share/doc/walua/walua.service",
                 "/usr/local/share/doc/walua/walua.socket"]
        for path in files:
            assert os.path.isfile(dest + path), path
            # the man page's FILES names each (the units as one entry)
            assert path in man or os.path.basename(path) in man, path
        assert os.access(dest + files[0], os.X_OK)
        p = subprocess.run([dest + files[0], "--help"], capture_output=True,
                           text=True, timeout=10, cwd=dest)
        assert p.returncode == 0 and "SIGUSR2" in p.stdout, p
        p = subprocess.run([dest + files[0], "check", "-c",
                            dest + files[2]], capture_output=True, text=True,
                           timeout=30, env=dict(os.environ,
                                                INSIDER_WEBHOOK_TOKEN="x" * 20))
        # the example config names a handler the site writes: only that
        assert "bot.lua" in p.stderr, p
        p = subprocess.run(["make", "-C", ROOT, "--no-print-directory",
                            "uninstall", "DESTDIR=" + dest,
                            "PREFIX=/usr/local"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        left = [os.path.join(r, f) for r, _, fs in os.walk(dest) for f in fs]
        assert left == [], left
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_unit_files_pass_systemd_analyze_verify():
    tool = shutil.which("systemd-analyze")
    if tool is None:
        print("# SKIP: systemd-analyze is not installed (package systemd)")
        return
    tmp = tempfile.mkdtemp(prefix="walua-units-")
    try:
        # verify checks that ExecStart exists: point it at the built
        # binary (the unit names the installed one); the man page of
        # Documentation= is not installed here (--man=no)
        with open(os.path.join(ROOT, "contrib", "walua.service")) as f:
            unit = f.read()
        assert "ExecStart=/usr/local/bin/walua serve" in unit
        with open(os.path.join(tmp, "walua.service"), "w") as f:
            f.write(unit.replace("/usr/local/bin/walua", WALUA))
        shutil.copy(os.path.join(ROOT, "contrib", "walua.socket"), tmp)
        p = subprocess.run([tool, "verify", "--man=no",
                            os.path.join(tmp, "walua.service"),
                            os.path.join(tmp, "walua.socket")],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and p.stderr.strip() == "", (
            p.returncode, p.stdout, p.stderr)
        for opt in ("Type=notify", "NoNewPrivileges=yes",
                    "ProtectSystem=strict", "PrivateTmp=yes",
                    "ReadWritePaths=", "ExecReload=/bin/kill -HUP $MAINPID",
                    "MemoryMax="):
            assert opt in unit, opt
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# socket activation and readiness --------------------------------------
def test_socket_activation_serves_the_inherited_socket():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    port = ls.getsockname()[1]
    d = Daemon(handlers={"h.lua": LOG_EVERY_EVENT})
    try:
        # fd 3 is the socket, LISTEN_PID the pid walua will have (exec
        # keeps the shell's pid); `listen` names another port, unbound
        os.dup2(ls.fileno(), 3) if ls.fileno() != 3 else None
        d.logf = open(d.log_path, "ab")
        d.proc = subprocess.Popen(
            ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" serve -c "$1"',
             WALUA, d.conf], stdout=d.logf, stderr=d.logf, cwd=d.dir,
            env=d.env, pass_fds=(3,))
        d.wait_ready()
        assert post_raw(port, text_body("activated", "wamid.SA1").encode()) \
            == 200
        got = d.wait_log(lambda l: l.get("msg") == "handled")
        assert got[0]["message_id"] == "wamid.SA1"
        # the config's own port was not bound
        s = socket.socket()
        try:
            assert s.connect_ex(("127.0.0.1", d.port)) != 0
        finally:
            s.close()
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)
        d.logf.close()
        ls.close()
        try:
            os.close(3)
        except OSError:
            pass
        shutil.rmtree(d.dir, ignore_errors=True)


def test_sd_notify_ready_reloading_stopping():
    tmp = tempfile.mkdtemp(prefix="walua-notify-")
    path = os.path.join(tmp, "notify")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(path)
    ns.settimeout(10)
    try:
        with Daemon(env={"NOTIFY_SOCKET": path}) as d:
            assert ns.recv(256) == b"READY=1"
            d.signal(signal.SIGHUP)
            assert ns.recv(256) == b"RELOADING=1"
            assert ns.recv(256) == b"READY=1"
            d.wait_log(lambda l: l.get("msg") == "reload ok")
            d.signal(signal.SIGTERM)
            assert ns.recv(256) == b"STOPPING=1"
            assert d.proc.wait(15) == 0
    finally:
        ns.close()
        shutil.rmtree(tmp, ignore_errors=True)


# one walua per database -------------------------------------------------
def test_a_second_walua_on_the_same_database_refuses_to_start():
    with Daemon() as d:
        other = Daemon()
        try:
            # the same folder's database, other ports
            with open(d.conf) as f:
                conf = f.read()
            conf = conf.replace(str(d.port), str(other.port)).replace(
                str(d.admin_port), str(other.admin_port))
            conf = conf.replace("return {", "return {\n  database = %s," %
                                json.dumps(os.path.join(d.dir, "walua.db")),
                                1)
            other.write("walua.conf.lua", conf)
            p = subprocess.run([WALUA, "serve", "-c", other.conf],
                               capture_output=True, text=True, timeout=20,
                               cwd=other.dir)
            assert p.returncode == 1, p
            assert "is locked by pid %d" % d.proc.pid in p.stderr, p.stderr
        finally:
            shutil.rmtree(other.dir, ignore_errors=True)
        # the first one is untouched
        d.deliver(text_body("still", "wamid.LOCK1"))


# SIGUSR1 --------------------------------------------------------------------
def test_sigusr1_reopens_the_log_file():
    d = Daemon(handlers={"h.lua": LOG_EVERY_EVENT})
    d.write("walua.conf.lua", open(d.conf).read().replace(
        "return {", 'return {\n  log_file = "app.log",', 1))
    with d:
        log = os.path.join(d.dir, "app.log")
        d.deliver(text_body("one", "wamid.R1"))
        wait_text(log, "wamid.R1")
        os.rename(log, log + ".1")
        d.signal(signal.SIGUSR1)
        wait_text(log, "log file reopened")
        d.deliver(text_body("two", "wamid.R2"))
        # the handler's line comes from a worker: it reopened too
        wait_text(log, '"handled"')
        with open(log + ".1") as f:
            old = f.read()
        with open(log) as f:
            new = f.read()
        assert "wamid.R2" in new and "wamid.R2" not in old, (old, new)


# scheduling ---------------------------------------------------------------

def policies(pid):
    """{(pid, tid, thread name): scheduling policy} of pid's threads and
    of its children's (the handler workers); the policy is stat field 41."""
    out = {}
    for p in [pid] + children(pid):
        for tid in os.listdir("/proc/%d/task" % p):
            st = proc_stat("/proc/%d/task/%s/stat" % (p, tid))
            if st:
                out[(p, tid, st[0])] = int(st[1][41 - 3])
    return out


def test_threads_and_workers_run_under_sched_batch():
    d = Daemon(handlers={"h.lua": LOG_EVERY_EVENT}, workers=2)
    with d:
        d.deliver(text_body("hi", "wamid.S1"))
        d.wait_log(lambda e: e.get("msg") == "handled")
        pol = policies(d.proc.pid)
        names = sorted(n for _, _, n in pol)
        # the supervisor, its HTTP, writer and checkpointer threads, and
        # the two workers
        assert "http" in names and "inbox-writer" in names, names
        assert sum(n == "walua-worker" for n in names) >= 2, names
        assert set(pol.values()) == {os.SCHED_BATCH}, pol
        start = d.find(lambda e: e.get("msg") == "starting")
        assert start and start[0].get("scheduling") == "batch", start


def test_a_scheduling_policy_the_operator_chose_is_kept():
    d = Daemon(handlers={"h.lua": LOG_EVERY_EVENT}, workers=1)
    d.preexec = lambda: os.sched_setscheduler(0, os.SCHED_IDLE,
                                              os.sched_param(0))
    with d:
        d.deliver(text_body("hi", "wamid.S2"))
        d.wait_log(lambda e: e.get("msg") == "handled")
        pol = policies(d.proc.pid)
        assert "walua-worker" in [n for _, _, n in pol], pol
        assert set(pol.values()) == {os.SCHED_IDLE}, pol
        start = d.find(lambda e: e.get("msg") == "starting")
        assert start and start[0].get("scheduling") == "idle", start


def wait_text(path, text, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with open(path) as f:
                if text in f.read():
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("%r not in %s" % (text, path))


# backup -------------------------------------------------------------------
def test_inbox_backup_is_a_consistent_copy_while_walua_writes():
    with Daemon() as d:
        for i in range(50):
            d.deliver(text_body("b%d" % i, "wamid.BK%d" % i))
        out = os.path.join(d.dir, "copy.db")
        p = walua("run", "-c", d.conf, "inbox", "backup", out, cwd=d.dir)
        assert p.returncode == 0, p
        con = sqlite3.connect(out)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            n = con.execute("SELECT count(*) FROM events WHERE message_id "
                            "LIKE 'wamid.BK%'").fetchone()[0]
        finally:
            con.close()
        assert n == 50, n
        p = walua("run", "-c", d.conf, "inbox", "backup", out, cwd=d.dir)
        assert p.returncode == 1 and "exists" in p.stderr, p


# SIGUSR2 --------------------------------------------------------------------
def load(port, first, count, rate, q):
    """Post count deliveries (ids first..) at rate a second; report each
    (id, status or error name) on q."""
    out = []
    t0 = time.time()
    for i in range(count):
        delay = t0 + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        mid = "wamid.UP%06d" % (first + i)
        try:
            st = post_raw(port, text_body("u", mid).encode())
        except ConnectionRefusedError:
            st = "refused"
        except OSError as e:
            st = type(e).__name__
        out.append((mid, st))
    q.put(out)


def test_sigusr2_upgrade_under_load_refuses_nothing_loses_nothing():
    procs, rate, seconds = 4, 2000, 10
    per = rate * seconds // procs
    d = Daemon(handlers={"h.lua": LOG_EVERY_EVENT}, log_level="info")
    new_pid = 0
    try:
        d.start()
        old_pid = d.proc.pid
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        ps = [ctx.Process(target=load, args=(d.port, k * per, per,
                                             rate / procs, q))
              for k in range(procs)]
        t0 = time.time()
        for p in ps:
            p.start()
        time.sleep(seconds / 2)
        d.signal(signal.SIGUSR2)
        new_pid = wait_new_pid(d, old_pid)
        results = []
        for _ in ps:
            results += q.get(timeout=seconds * 6)
        took = time.time() - t0
        for p in ps:
            p.join(10)
        assert d.proc.wait(30) == 0, "the old walua did not exit 0"
        statuses = {}
        for _, st in results:
            statuses[st] = statuses.get(st, 0) + 1
        acked = [m for m, st in results if st == 200]
        print("# %d deliveries in %.1f s (%.0f/s) across the upgrade "
              "(pid %d -> %d): %s" % (len(results), took,
                                      len(results) / took, old_pid, new_pid,
                                      statuses))
        assert statuses.get("refused", 0) == 0, statuses
        assert statuses == {200: len(results)}, statuses
        # all handled, each once, by one walua or the other
        end = time.time() + 60
        while time.time() < end:
            handled = [l["message_id"] for l in d.logs()
                       if l.get("msg") == "handled"]
            if len(handled) >= len(acked):
                break
            time.sleep(0.2)
        counts = {}
        for m in handled:
            counts[m] = counts.get(m, 0) + 1
        missing = [m for m in acked if m not in counts]
        twice = [m for m, c in counts.items() if c > 1]
        print("# handled %d of %d acknowledged; twice: %d" % (
            len(counts), len(acked), len(twice)))
        assert missing == [] and twice == [], (missing[:5], twice[:5])
        assert alive(new_pid)
        st, _, body = d.admin_request("GET", "/healthz")
        assert st == 200 and json.loads(body)["pending"] == 0, body
        lines = d.log_text()
        assert "upgrade: pid %d is ready" % new_pid in lines
    finally:
        end_pid(new_pid)


def test_a_failing_upgrade_leaves_the_old_walua_serving():
    with Daemon(handlers={"h.lua": LOG_EVERY_EVENT}) as d:
        # the new binary finds a config it cannot load and exits
        good = open(d.conf).read()
        d.write("walua.conf.lua", "return { nonsense = true }")
        d.signal(signal.SIGUSR2)
        d.wait_log(lambda l: l.get("msg", "").startswith("upgrade failed"))
        d.write("walua.conf.lua", good)
        assert d.proc.poll() is None
        assert lock_pid(d) == d.proc.pid
        d.deliver(text_body("after", "wamid.UF1"))
        d.wait_log(lambda l: l.get("msg") == "handled" and
                   l.get("message_id") == "wamid.UF1")
        assert d.stop() == 0
