"""pgcluster.py - a throwaway PostgreSQL 15 cluster for the test suites.

    with Cluster() as pg:
        url = pg.new_database()     # postgresql://postgres@127.0.0.1:PORT/db1

The cluster lives in a temporary folder, listens on 127.0.0.1 on a free
port (its socket in that folder too), trusts local connections, and runs
as the `postgres` user when the tests run as root (PostgreSQL refuses to
run as root).  stop() ends it through pg_ctl, which signals the PID in
its postmaster.pid; a postmaster still there after that is killed by that
PID.  A watcher process started with the cluster stops it (and removes its
folder) when the test process goes away without doing so (killed by a
timeout) or after MAX_LIFE seconds, whichever comes first.  fsync is off unless asked: the suites kill walua, never the
machine, and a cluster that syncs makes every test slower.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN = "/usr/lib/postgresql/15/bin"
MAX_LIFE = 3600

# The watcher: waits for its stdin to close (the test process ended or
# closed it) or MAX_LIFE; then stops the cluster by its PID file.
WATCHER = r"""
import os, select, shutil, subprocess, sys
argv, data, top, life = sys.argv[1:-3], sys.argv[-3], sys.argv[-2], \
    float(sys.argv[-1])
select.select([sys.stdin], [], [], life)
if os.path.exists(os.path.join(data, "postmaster.pid")):
    subprocess.run(argv + [os.path.join(%r, "pg_ctl"), "-D", data, "-m",
                   "immediate", "-w", "-t", "30", "stop"],
                   capture_output=True, timeout=45)
shutil.rmtree(top, ignore_errors=True)
""" % BIN


def available():
    return os.path.exists(os.path.join(BIN, "initdb"))


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cluster:
    def __init__(self, fsync=False):
        # tests/run.py's scratch folder is for one test's folders
        self.dir = tempfile.mkdtemp(prefix="walua-pg-",
                                    dir=os.environ.get("WALUA_SHARED_TMP"))
        self.data = os.path.join(self.dir, "data")
        self.port = _free_port()
        self.fsync = fsync
        self.ndb = 0
        self.as_user = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run([os.path.join(BIN, "initdb"), "-D", self.data, "-U",
                   "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
                   "--locale=C"], timeout=120)
        self.running = False

    def _run(self, argv, timeout=60):
        p = subprocess.run(self.as_user + argv, capture_output=True,
                           text=True, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError("%s failed (%d):\n%s%s" % (
                " ".join(argv), p.returncode, p.stdout[-2000:],
                p.stderr[-2000:]))
        return p.stdout

    def start(self):
        opts = ("-p %d -k %s -c listen_addresses=127.0.0.1"
                " -c max_connections=200 -c fsync=%s"
                " -c shared_buffers=32MB" % (
                    self.port, self.dir, "on" if self.fsync else "off"))
        self._run([os.path.join(BIN, "pg_ctl"), "-D", self.data, "-o",
                   opts, "-l", os.path.join(self.dir, "postgres.log"),
                   "-w", "-t", "60", "start"], timeout=90)
        self.running = True
        if getattr(self, "watcher", None) is None:
            self.watcher = subprocess.Popen(
                [sys.executable, "-c", WATCHER] + self.as_user +
                [self.data, self.dir, str(MAX_LIFE)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        return self

    def pid(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def stop(self, mode="fast"):
        if not self.running:
            return
        pid = self.pid()
        try:
            self._run([os.path.join(BIN, "pg_ctl"), "-D", self.data, "-m",
                       mode, "-w", "-t", "30", "stop"], timeout=45)
        except (AssertionError, subprocess.TimeoutExpired):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                time.sleep(0.5)
        self.running = False

    def url(self, dbname="postgres"):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, dbname)

    def psql(self, sql, dbname="postgres"):
        """Run sql with psql; its unaligned output, rows on lines."""
        p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v",
                            "ON_ERROR_STOP=1", "-d", self.url(dbname),
                            "-c", sql], capture_output=True, text=True,
                           timeout=60)
        if p.returncode != 0:
            raise AssertionError("psql failed: %s" % p.stderr[-2000:])
        return p.stdout

    def new_database(self):
        """A fresh, empty database; its URL."""
        self.ndb += 1
        name = "walua%d" % self.ndb
        self.psql("CREATE DATABASE %s" % name)
        return self.url(name)

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        w = getattr(self, "watcher", None)
        if w is not None:
            w.stdin.close()         # the watcher finds nothing to stop
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
            self.watcher = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


_shared = None


def shared():
    """One cluster for the whole test run (tests/run.py imports every
    suite into one process), started on first use and stopped at exit;
    each test takes a database of its own (new_database)."""
    global _shared
    if _shared is None:
        import atexit
        _shared = Cluster().start()
        atexit.register(_shared.close)
    return _shared
