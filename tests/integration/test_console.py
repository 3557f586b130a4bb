"""test_console.py - the operator's console, in a real browser and by hand.

The browser test drives Debian's chromium (headless) through chromedriver's
W3C WebDriver protocol, plain HTTP and JSON with urllib: log in, compare
the overview with `walua run inbox stats`, open a dead letter, fix its
handler (SIGHUP), replay it and see it handled.  It writes a screenshot of
each page to a temporary folder (printed), or to tests/console/screenshots/
(the README's) when WALUA_CONSOLE_SCREENSHOTS=1.

The others use http.client: what answers without a session, CSRF, the
lockout, escaping, the cookie's flags, the JSON API, `walua check`.
"""
import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from harness import Daemon, ROOT, WALUA, free_port, text_body, walua

# run again with each daemon on PostgreSQL (tests/run.py)
PG_AGAIN = True

USER = "ops"
PASSWORD = "correct horse battery"
WRONG = "tr0ub4dor-guess"


def pbkdf2_hash(password, iterations=10000):
    """A console hash made here, not by walua (Python's hashlib)."""
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return "pbkdf2-sha256$%d$%s$%s" % (iterations,
                                       base64.b64encode(salt).decode(),
                                       base64.b64encode(key).decode())


def console_conf(retries=0):
    return ('  console = { users = { { name = "%s", password_hash = "%s" } } },\n'
            '  limits = { retries = %d },\n' % (USER, pbkdf2_hash(PASSWORD),
                                               retries))


# Fails (raises) on the marker text, logs every other event.
FAILING = r'''
local log = require "walua.log"
return function(ev)
	if ev.text and ev.text:find("console-marker", 1, true) then
		error("cannot handle " .. ev.text)
	end
	log.info("handled", { id = ev.id, text = ev.text })
end
'''
FIXED = FAILING.replace('error("cannot handle " .. ev.text)',
                        'log.info("fixed handler", { id = ev.id })')


def form(fields):
    return urllib.parse.urlencode(fields).encode()


def login(d, password=PASSWORD, user=USER, headers=None):
    """POST the login form; returns status, headers, body."""
    h = {"Content-Type": "application/x-www-form-urlencoded"}
    h.update(headers or {})
    return d.admin_request("POST", "/console/login",
                           form({"user": user, "password": password}), h)


def session(d):
    """A logged-in session: (cookie header value, CSRF token)."""
    status, headers, _ = login(d)
    assert status == 303, status
    cookie = headers["set-cookie"].split(";")[0]
    status, _, body = d.admin_request("GET", "/console/",
                                      headers={"Cookie": cookie})
    assert status == 200, status
    m = re.search(rb'name="csrf" value="([0-9a-f]{64})"', body)
    assert m, body[:500]
    return cookie, m.group(1).decode()


def inbox_stats(d):
    r = walua("run", "inbox", "stats", "--json", "-c", d.conf, cwd=d.dir)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_stats(d, pred, timeout=10):
    end = time.time() + timeout
    while True:
        s = inbox_stats(d)
        if pred(s):
            return s
        if time.time() > end:
            raise AssertionError("inbox stats never matched: %r" % s)
        time.sleep(0.1)


# WebDriver ---------------------------------------------------------------

class Browser:
    """Headless chromium through chromedriver (W3C WebDriver over HTTP).
    chromedriver runs in its own process group, which close() ends (its
    chromium children too) by its id."""

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["chromedriver", "--port=%d" % self.port],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.url = "http://127.0.0.1:%d" % self.port
        self.sid = None
        try:
            end = time.time() + 10
            while True:
                try:
                    if self.call("GET", "/status")["ready"]:
                        break
                except OSError:
                    pass
                if time.time() > end:
                    raise AssertionError("chromedriver did not start")
                time.sleep(0.1)
            caps = {"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox",
                             "--disable-gpu", "--window-size=1280,900"]}}}}
            self.sid = self.call("POST", "/session", caps)["sessionId"]
        except BaseException:
            self.close()
            raise

    def call(self, method, path, body=None, timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data,
                                     method=method, headers={
                                         "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError("webdriver %s %s: %s" % (
                method, path, e.read()[:500]))

    def s(self, method, path, body=None):
        return self.call(method, "/session/%s%s" % (self.sid, path), body)

    def go(self, url):
        self.s("POST", "/url", {"url": url})

    def current(self):
        return self.s("GET", "/url")

    def find(self, css):
        v = self.s("POST", "/element", {"using": "css selector", "value": css})
        return list(v.values())[0]

    def text(self, css):
        return self.s("GET", "/element/%s/text" % self.find(css))

    def type(self, css, text):
        self.s("POST", "/element/%s/value" % self.find(css), {"text": text})

    def click(self, css):
        self.s("POST", "/element/%s/click" % self.find(css), {})

    def wait_url(self, pred, timeout=10):
        """The current URL once pred accepts it (a click's navigation may
        still be under way when the click returns)."""
        end = time.time() + timeout
        while True:
            url = self.current()
            if pred(url):
                return url
            if time.time() > end:
                raise AssertionError("the browser stayed at " + url)
            time.sleep(0.05)

    def source(self):
        return self.s("GET", "/source")

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.s("GET", "/screenshot")))

    def close(self):
        try:
            if self.sid is not None:
                self.call("DELETE", "/session/" + self.sid, timeout=10)
        except Exception:
            pass
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def shots_dir():
    if os.environ.get("WALUA_CONSOLE_SCREENSHOTS") == "1":
        out = os.path.join(ROOT, "tests", "console", "screenshots")
        os.makedirs(out, exist_ok=True)
        return out
    return tempfile.mkdtemp(prefix="walua-console-shots-")


def test_console_in_a_browser():
    with Daemon(handlers={"bot.lua": FAILING},
                extra=console_conf(retries=0)) as d:
        d.deliver(text_body("hello there", "wamid.console-ok-1"))
        d.deliver(text_body("how are you?", "wamid.console-ok-2",
                            wa_id="905321230000"))
        d.deliver(text_body("console-marker: order 42", "wamid.console-bad",
                            wa_id="905329999999"))
        dead = d.wait_log(lambda l: l["msg"] == "event dead-lettered")[0]
        dead_id = dead["event"]
        stats = wait_stats(d, lambda s: s["done"] == 2 and s["dead"] == 1)

        out = shots_dir()
        # a temporary folder goes when the test passes (tests/run.py)
        print("console screenshots in", out)
        base = "http://127.0.0.1:%d/console" % d.admin_port
        b = Browser()
        try:
            b.go(base + "/events")          # no session: the login page
            b.wait_url(lambda u: u.endswith("/console/login"))
            b.screenshot(os.path.join(out, "login.png"))
            b.type("#user", USER)
            b.type("#password", PASSWORD)
            b.click("button[type=submit]")
            b.wait_url(lambda u: u.rstrip("/").endswith("/console"))

            # the overview's counts are the inbox's
            for key in ("pending", "retrying", "dead", "done"):
                assert b.text("#n-" + key) == str(stats[key]), (
                    key, b.text("#n-" + key), stats)
            assert b.text("#workers") == "2"
            assert b.text("#generation") == "1"
            b.screenshot(os.path.join(out, "overview.png"))

            b.go(base + "/events")
            b.screenshot(os.path.join(out, "events.png"))
            b.go(base + "/events?state=dead")
            b.click('a[href$="/events/%s"]' % dead_id)
            b.wait_url(lambda u: u.endswith("/events/" + dead_id))
            assert b.text("#ev-id") == dead_id
            assert b.text("#ev-state") == "dead"
            assert "cannot handle console-marker" in b.source()

            # fix the handler, reload, replay the dead letter from its page
            d.write("bot.lua", FIXED)
            d.signal(signal.SIGHUP)
            d.wait_log(lambda l: l["msg"] == "reload ok")
            b.click("main form button[type=submit]")
            b.wait_url(lambda u: "done=replayed" in u)
            d.wait_log(lambda l: l["msg"] == "fixed handler"
                       and l.get("id") == dead_id)
            d.wait_log(lambda l: l["msg"] == "console: event replayed"
                       and l.get("user") == USER and l.get("event") == dead_id)
            end = time.time() + 10
            while True:
                b.go(base + "/events/" + dead_id)
                if b.text("#ev-state") == "done":
                    break
                assert time.time() < end, b.text("#ev-state")
                time.sleep(0.2)
            src = b.source()
            # attempt 1 failed, the replay's attempt 1 handled it
            assert re.search(r">failed: [^<]*cannot handle console-marker",
                             src), src
            assert "handled" in src
            b.screenshot(os.path.join(out, "event.png"))

            b.go(base + "/")
            assert b.text("#n-dead") == "0"
            assert b.text("#generation") == "2"
            assert b.text("#reload").startswith("ok at ")
        finally:
            b.close()
        for name in ("login", "overview", "events", "event"):
            with open(os.path.join(out, name + ".png"), "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n", name


CONSOLE_PAGES = ["/console", "/console/", "/console/events",
                 "/console/events?state=dead", "/console/events/abc",
                 "/console/dead/replay", "/console/nothing"]
CONSOLE_API = ["/console/api/overview", "/console/api/events",
               "/console/api/events/abc"]


def test_console_requires_a_session():
    with Daemon(extra=console_conf()) as d:
        for path in CONSOLE_PAGES:
            status, h, _ = d.admin_request("GET", path)
            assert status == 303, (path, status)
            assert h["location"] == "/console/login", (path, h)
        for path in CONSOLE_API:
            status, _, body = d.admin_request("GET", path)
            assert status == 401, (path, status)
            assert json.loads(body)["ok"] is False
        for path in ["/console/api/dead/replay",
                     "/console/api/events/abc/replay"]:
            status, _, _ = d.admin_request("POST", path, b"")
            assert status == 401, (path, status)
        for path in ["/console/dead/replay", "/console/events/abc/replay",
                     "/console/logout"]:
            status, h, _ = d.admin_request("POST", path, form(
                {"confirm": "yes"}), {"Content-Type":
                                      "application/x-www-form-urlencoded"})
            assert status == 303 and h["location"] == "/console/login", path
        # a forged cookie is no session
        status, _, _ = d.admin_request("GET", "/console/api/overview",
                                       headers={"Cookie": "walua_console="
                                                + "a" * 64})
        assert status == 401
        # the login page and its stylesheet only
        status, h, body = d.admin_request("GET", "/console/login")
        assert status == 200 and b'name="password"' in body
        assert h["content-security-policy"].startswith("default-src 'self'")
        assert h["x-frame-options"] == "DENY"
        assert b'name="viewport"' in body
        status, h, _ = d.admin_request("GET", "/console/style.css")
        assert status == 200 and h["content-type"].startswith("text/css")
        # never on the webhook port while an admin listener exists
        status, _, _ = d.request("GET", "/console/login")
        assert status == 404


def test_console_csrf_and_cookie():
    with Daemon(handlers={"bot.lua": FAILING}, extra=console_conf()) as d:
        d.deliver(text_body("console-marker", "wamid.csrf-1"))
        d.wait_log(lambda l: l["msg"] == "event dead-lettered")
        status, h, _ = login(d)
        assert status == 303
        flags = [p.strip() for p in h["set-cookie"].split(";")]
        assert "HttpOnly" in flags and "SameSite=Strict" in flags
        assert "Path=/console" in flags and "Secure" not in flags
        status, h, _ = login(d, headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in [p.strip() for p in h["set-cookie"].split(";")]

        cookie, csrf = session(d)
        hc = {"Cookie": cookie}
        hf = dict(hc, **{"Content-Type": "application/x-www-form-urlencoded"})
        # forged: a valid session cookie, no token or a wrong one
        for headers, body in [(hc, b""), (dict(hc, **{"X-CSRF-Token": "0" * 64}),
                                           b""),
                              (hf, form({"confirm": "yes"})),
                              (hf, form({"confirm": "yes", "csrf": "1" * 64}))]:
            for path in ["/console/api/dead/replay", "/console/dead/replay"]:
                status, _, _ = d.admin_request("POST", path, body, headers)
                assert status == 403, (path, headers, body, status)
        assert inbox_stats(d)["dead"] == 1      # nothing was replayed

        # the confirmation step, then the replay, with the token
        status, _, body = d.admin_request("POST", "/console/dead/replay",
                                          form({"csrf": csrf}), hf)
        assert status == 200 and b'name="confirm" value="yes"' in body
        status, _, body = d.admin_request("GET", "/console/api/events?state=dead",
                                          headers=hc)
        events = json.loads(body)["events"]
        assert len(events) == 1 and events[0]["state"] == "dead"
        status, _, body = d.admin_request(
            "POST", "/console/api/events/%s/replay" % events[0]["id"], b"",
            dict(hc, **{"X-CSRF-Token": csrf}))
        assert status == 200 and json.loads(body)["replayed"] == 1, body
        d.wait_log(lambda l: l["msg"] == "console: event replayed"
                   and l.get("user") == USER)
        # logout ends the session
        status, h, _ = d.admin_request("POST", "/console/logout",
                                       form({"csrf": csrf}), hf)
        assert status == 303 and "Max-Age=0" in h["set-cookie"]
        status, _, _ = d.admin_request("GET", "/console/api/overview",
                                       headers=hc)
        assert status == 401


def test_console_lockout_and_no_password_in_log():
    with Daemon(extra=console_conf()) as d:
        for i in range(5):
            status, _, body = login(d, WRONG + str(i))
            assert status == 401, (i, status)
            assert b"Wrong user name or password" in body
        status, h, _ = login(d, PASSWORD)           # the 6th, right
        assert status == 429, status
        assert 1 <= int(h["retry-after"]) <= 60
        # the address is locked out too, whatever the user name
        status, _, _ = login(d, PASSWORD, user="someone-else")
        assert status == 429
        d.wait_log(lambda l: l["msg"] == "console login refused"
                   and l.get("user") == USER)
        fails = d.find(lambda l: l["msg"] == "console login failed")
        assert len(fails) == 5 and all(l["user"] == USER for l in fails)
        text = d.log_text()
        assert PASSWORD not in text and WRONG not in text


def test_console_escapes_and_api():
    script = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    with Daemon(extra=console_conf()) as d:
        d.deliver(text_body(script, "wamid.<b>xss</b>"))
        d.wait_log(lambda l: l["msg"] == "handled")
        cookie, csrf = session(d)
        hc = {"Cookie": cookie}
        status, _, body = d.admin_request("GET", "/console/api/events",
                                          headers=hc)
        ev = json.loads(body)["events"][0]
        for path in ["/console/events", "/console/events/" + ev["id"],
                     "/console/events?q=" + urllib.parse.quote("<b>")]:
            status, h, page = d.admin_request("GET", path, headers=hc)
            assert status == 200, path
            assert b"<script>" not in page and b"<b>xss" not in page, path
            assert b"<img" not in page, path
            assert b"&lt;b&gt;xss" in page, path
            assert h["x-frame-options"] == "DENY"
        status, _, body = d.admin_request("GET", "/console/api/events/"
                                          + ev["id"], headers=hc)
        got = json.loads(body)
        assert got["body"]["text"] == script and got["failed_attempts"] == []
        status, _, body = d.admin_request("GET", "/console/api/overview",
                                          headers=hc)
        o = json.loads(body)
        assert o["csrf"] == csrf
        assert o["done"] + o["pending"] == 1 and o["dead"] == 0
        assert len(o["minutes"]["acked"]) == 60
        assert o["minutes"]["acked"][-1] + o["minutes"]["acked"][-2] >= 1


def test_console_on_listen_without_admin_listener():
    with Daemon(extra=console_conf(), admin=False) as d:
        status, _, body = d.request("GET", "/console/login")
        assert status == 200 and b"Log in" in body
        status, _, _ = d.request("GET", "/console/api/overview")
        assert status == 401


def test_console_check_rejects_bad_config():
    with tempfile.TemporaryDirectory() as tmp:
        good = pbkdf2_hash("x")
        cases = [
            ('{ users = { { name = "ops", password_hash = "%s", role = "admin" } } }'
             % good, "console.users[1].role: unknown key"),
            ('{ users = { { name = "ops", password_hash = "plain-text" } } }',
             "console.users[1].password_hash"),
            ('{ users = { { name = "ops", password_hash = "pbkdf2-sha256$100$'
             'AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA==" } } }',
             "console.users[1].password_hash"),
            ('{ paht = "/c", users = { { name = "ops", password_hash = "%s" } } }'
             % good, "console.paht: unknown key"),
            ('{ users = {} }', "console.users"),
        ]
        for text, want in cases + [('{ users = { { name = "ops", '
                                    'password_hash = "%s" } } }' % good, None)]:
            path = os.path.join(tmp, "walua.conf.lua")
            with open(path, "w") as f:
                f.write("return { console = %s }\n" % text)
            r = walua("check", "-c", path)
            if want is None:
                assert r.returncode == 0, r.stderr
            else:
                assert r.returncode == 1 and want in r.stderr, (text, r.stderr)
        # console-passwd's hash is one walua check takes
        r = subprocess.run([WALUA, "run", "console-passwd", "--iterations",
                            "10000"], input="s3cret\n", capture_output=True,
                           text=True, timeout=30, cwd=tmp)
        assert r.returncode == 0 and r.stdout.startswith("pbkdf2-sha256$10000$")
        assert "s3cret" not in r.stdout
        with open(os.path.join(tmp, "walua.conf.lua"), "w") as f:
            f.write('return { console = { users = { { name = "ops", '
                    'password_hash = "%s" } } } }\n' % r.stdout.strip())
        assert walua("check", "-c", os.path.join(tmp, "walua.conf.lua")
                     ).returncode == 0
