"""harness.py - start a real walua daemon for a test and talk to it.

    with Daemon(handlers={"bot.lua": SRC}) as d:
        status, headers, body = d.post("/webhooks/insider", BODY,
                                       token="test-token")
        d.wait_log(lambda l: l["msg"] == "handled")

Every daemon binds 127.0.0.1 on a free port, and its admin listener
(/healthz, /metrics: d.admin_request) on another, writes its log (one JSON
object per line) to a file in its own temporary folder, and is stopped by
its PID when the test ends (SIGTERM, then SIGKILL after a timeout).
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WALUA = os.path.abspath(os.path.join(ROOT, os.environ.get("WALUA_BIN", "walua")))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TOKEN = "test-token-0123456789"
# tests/run.py's second pass over some suites: every Daemon (whose config
# the harness writes) on a fresh database of a throwaway PostgreSQL
PG = False


def sqlite_only(fn):
    """A test that reads or breaks the SQLite file itself: the PostgreSQL
    pass skips it, saying so."""
    fn.sqlite_only = True
    return fn


def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def free_port(other_than=()):
    """A port nothing listens on now (none of other_than: the kernel may
    hand out the same free port twice in a row)."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in other_than:
            return port


def lua_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def default_endpoints(token=TOKEN):
    return ('{ { path = "/webhooks/insider", provider = "insider",\n'
            '    auth = { type = "bearer", token = %s } },\n'
            '  { path = "/webhooks/meta-bearer", provider = "meta",\n'
            '    auth = { type = "bearer", token = %s } } }'
            % (lua_str(token), lua_str(token)))


class Daemon:
    """A walua serve process with its own folder, config and log."""

    def __init__(self, handlers=None, extra="", endpoints=None, workers=2,
                 log_level="debug", token=TOKEN, env=None, config=None,
                 admin=True):
        self.dir = tempfile.mkdtemp(prefix="walua-test-")
        self.port = free_port()
        # admin=False: admin_listen = false (no /healthz, /metrics at all)
        self.admin_port = free_port((self.port,)) if admin else None
        self.token = token
        self.log_path = os.path.join(self.dir, "walua.log")
        self.proc = None
        self.env = dict(os.environ, **(env or {}))
        self.handlers = handlers if handlers is not None else {
            "handler.lua": LOG_EVERY_EVENT}
        for name, src in self.handlers.items():
            self.write(name, src)
        self.conf = os.path.join(self.dir, "walua.conf.lua")
        self.database = None
        if PG and config is None:
            import pgcluster
            self.database = pgcluster.shared().new_database()
        if config is None:
            config = self.config_text(endpoints, workers, log_level, extra)
        self.write("walua.conf.lua", config)
        self._log_pos = 0
        self._lines = []
        self.preexec = None     # run in the child before walua starts

    def config_text(self, endpoints=None, workers=2, log_level="debug",
                    extra=""):
        hs = ", ".join(lua_str(n) for n in self.handlers)
        if self.database is not None:
            # before extra: a test's own database setting wins
            extra = "database = %s,\n%s" % (lua_str(self.database), extra)
        admin = ('"127.0.0.1:%d"' % self.admin_port if self.admin_port
                 else "false")
        return ("return {\n"
                "  listen = \"127.0.0.1:%d\",\n"
                "  admin_listen = %s,\n"
                "  handlers = { %s },\n"
                "  workers = %d,\n"
                "  log_level = %s,\n"
                "  endpoints = %s,\n"
                "%s\n}\n" % (self.port, admin, hs, workers,
                             lua_str(log_level),
                             endpoints or default_endpoints(self.token),
                             extra))

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start(self, wait=True, timeout=15):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([WALUA, "serve", "-c", self.conf],
                                     stdout=self.logf, stderr=self.logf,
                                     cwd=self.dir, env=self.env,
                                     preexec_fn=self.preexec)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise AssertionError("walua exited with %d:\n%s" % (
                    self.proc.returncode, self.log_text()[-3000:]))
            try:
                if self.admin_port:
                    status, _, _ = self.admin_request("GET", "/healthz",
                                                      timeout=1)
                else:       # any answer on the public port will do
                    status, _, _ = self.request("GET", "/", timeout=1)
                    status = 200
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("walua did not answer /healthz in %ds:\n%s" % (
            timeout, self.log_text()[-3000:]))

    def request(self, method, path, body=None, headers=None, timeout=10,
                port=None):
        c = http.client.HTTPConnection("127.0.0.1", port or self.port,
                                       timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def admin_request(self, method, path, body=None, headers=None,
                      timeout=10):
        """A request to the admin listener (/healthz, /metrics)."""
        assert self.admin_port, "this daemon has no admin listener"
        return self.request(method, path, body, headers, timeout,
                            port=self.admin_port)

    def post(self, path, body, token=None, headers=None, timeout=10):
        h = {"Content-Type": "application/json"}
        if token is not None:
            h["Authorization"] = "Bearer " + token
        h.update(headers or {})
        if isinstance(body, str):
            body = body.encode()
        return self.request("POST", path, body, h, timeout)

    def deliver(self, body, path="/webhooks/insider"):
        """POST an authenticated body; assert a 200 and return its JSON."""
        status, _, resp = self.post(path, body, token=self.token)
        assert status == 200, (status, resp)
        return json.loads(resp)

    # logs --------------------------------------------------------------
    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def logs(self):
        """Every JSON log line so far (non-JSON lines are kept as text)."""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._log_pos += end
        for raw in data[:end].splitlines():
            try:
                self._lines.append(json.loads(raw))
            except ValueError:
                self._lines.append({"msg": "<text>", "text": raw.decode(
                    "utf-8", "replace")})
        return self._lines

    def find(self, pred):
        return [l for l in self.logs() if pred(l)]

    def wait_log(self, pred, count=1, timeout=10):
        end = time.time() + timeout
        while True:
            found = self.find(pred)
            if len(found) >= count:
                return found
            if time.time() > end:
                raise AssertionError("expected %d matching log lines, saw %d;"
                                     " log tail:\n%s" % (
                                         count, len(found),
                                         self.log_text()[-3000:]))
            time.sleep(0.05)

    # process -----------------------------------------------------------
    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=15):
        """SIGTERM, wait; SIGKILL if it does not exit.  Returns the status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("walua did not stop within %ds" % timeout)

    def kill9(self):
        """SIGKILL the daemon (its workers exit when their socket closes)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.logf.close()

    def restart(self, wait=True, timeout=15):
        """Start again on the same folder, config, database and log."""
        if self.proc is not None and self.proc.poll() is None:
            raise AssertionError("walua is still running")
        self.logf.close()
        return self.start(wait, timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
        finally:
            self.logf.close()
        # under `make check`, a sanitizer report anywhere (the daemon or a
        # worker) fails the test that produced it
        text = self.log_text()
        for marker in SANITIZER_MARKERS:
            if marker in text and exc[0] is None:
                i = text.index(marker)
                raise AssertionError("sanitizer report in %s:\n%s" % (
                    self.log_path, text[max(0, i - 200):i + 3000]))
        if exc[0] is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:")


# A handler that logs one "handled" line per event with what tests check.
LOG_EVERY_EVENT = r'''
local log = require "walua.log"
return function(ev)
	log.info("handled", { kind = ev.kind, type = ev.type, text = ev.text,
	    message_id = ev.message_id, status = ev.status, provider = ev.provider,
	    endpoint = ev.endpoint, id = ev.id, attempt = ev.attempt })
end
'''


def text_body(text, message_id, wa_id="905321234567",
              phone_number_id="106540352242922"):
    """An Insider (f) reply text body with the given text and message id."""
    return json.dumps({
        "key": "whatsapp-660e8400-e29b-41d4-a716-446655440001",
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "908502123456",
                             "phone_number_id": phone_number_id},
                "contacts": [{"profile": {"name": "Ayşe"}, "wa_id": wa_id}],
                "messages": [{"from": wa_id, "id": message_id,
                              "timestamp": "1749416383",
                              "text": {"body": text}, "type": "text"}]}}]}]})


def metric(d, name, labels=None):
    """The value of one sample of /metrics, or None when absent."""
    status, _, body = d.admin_request("GET", "/metrics", timeout=5)
    assert status == 200, (status, body)
    want = name + ("{%s}" % labels if labels else "")
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        parts = line.rsplit(" ", 1)
        if len(parts) == 2 and parts[0].replace(" ", "") == want:
            return float(parts[1])
    return None


def proc_stat(path):
    """A /proc stat file (/proc/PID/stat, /proc/PID/task/TID/stat) as
    (command name, [fields from the state on]: field N of proc(5) is
    fields[N - 3]), or None once the process is gone."""
    try:
        with open(path) as f:
            stat = f.read()
    except OSError:
        return None
    return (stat[stat.index("(") + 1:stat.rindex(")")],
            stat[stat.rindex(")") + 2:].split())


def children(pid):
    """PIDs of the live (not zombie) processes whose parent is pid."""
    out = []
    for name in os.listdir("/proc"):
        st = name.isdigit() and proc_stat("/proc/%s/stat" % name)
        if st and st[1][0] != "Z" and int(st[1][1]) == pid:
            out.append(int(name))
    return sorted(out)


def walua(*args, timeout=30, cwd=None, env=None):
    """Run the walua binary with args; returns the CompletedProcess."""
    return subprocess.run([WALUA] + list(args), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd,
                          env=dict(os.environ, **(env or {})))
