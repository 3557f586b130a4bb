"""admin_listen: /metrics and /healthz are served on their own listener
(127.0.0.1:9090 by default), never on the public webhook port."""
import json
import signal
import socket

from harness import Daemon, free_port, text_body
from test_check import Folder, check, run


def test_metrics_and_healthz_only_on_the_admin_listener():
    with Daemon() as d:
        for method in ("GET", "HEAD"):
            for path in ("/healthz", "/metrics"):
                st, _, body = d.request(method, path)
                assert st == 404, (method, path, st, body)
        st, _, body = d.admin_request("GET", "/healthz")
        assert st == 200 and json.loads(body)["ok"] is True, (st, body)
        st, headers, body = d.admin_request("GET", "/metrics")
        assert st == 200, (st, body)
        assert headers["content-type"].startswith("text/plain"), headers
        assert b"# TYPE walua_http_requests_total counter" in body, body
        st, _, _ = d.admin_request("HEAD", "/healthz")
        assert st == 200, st

        # the admin listener serves nothing else
        st, headers, _ = d.admin_request("POST", "/metrics", b"x")
        assert st == 405 and "GET" in headers.get("allow", ""), (st, headers)
        st, _, _ = d.admin_request("POST", "/webhooks/insider",
                                   text_body("wrong door", "wamid.ADM1"),
                                   {"Authorization": "Bearer " + d.token,
                                    "Content-Type": "application/json"})
        assert st == 404, st
        for path in ("/", "/webhooks/insider", "/oauth/token", "/nope"):
            st, _, _ = d.admin_request("GET", path)
            assert st == 404, (path, st)

        # the webhooks work as before, and the scrape counts them
        d.deliver(text_body("hello", "wamid.ADM2"))
        d.wait_log(lambda l: l.get("msg") == "handled")
        _, _, body = d.admin_request("GET", "/metrics")
        assert ('walua_http_requests_total{endpoint="/webhooks/insider",'
                'code="200"} 1') in body.decode(), body
        line = d.find(lambda l: l.get("msg") == "listening")[0]
        assert line["admin_listen"] == "127.0.0.1:%d" % d.admin_port, line
        assert d.stop() == 0
        assert not d.find(lambda l: l.get("msg") == "handled" and
                          l.get("message_id") == "wamid.ADM1")


def test_admin_listen_false_serves_them_nowhere():
    with Daemon(admin=False) as d:
        for path in ("/healthz", "/metrics"):
            st, _, _ = d.request("GET", path)
            assert st == 404, (path, st)
        d.deliver(text_body("hello", "wamid.ADM3"))
        d.wait_log(lambda l: l.get("msg") == "handled")
        line = d.find(lambda l: l.get("msg") == "listening")[0]
        assert "admin_listen" not in line, line
        assert d.stop() == 0


SHOW = '''local s = require "walua.settings"
print("admin_listen=" .. tostring(s.admin_listen))
'''


def test_admin_listen_default_is_the_loopback():
    # read through walua.settings: starting a daemon would bind 9090
    with Folder() as f:
        script = f.write("show.lua", SHOW)
        rc, out, both = run("run", "-c", f.conf, script)
        assert rc == 0, both
        assert "admin_listen=127.0.0.1:9090" in out, both
    with Folder(extra="  admin_listen = false,") as f:
        script = f.write("show.lua", SHOW)
        rc, out, both = run("run", "-c", f.conf, script)
        assert rc == 0, both
        assert "admin_listen=false" in out, both


def test_admin_listen_is_checked():
    port = free_port()
    for value, want in (
            ('"nope"', "admin_listen: expected HOST:PORT, got 'nope'"),
            ('"127.0.0.1:70000"', "admin_listen: expected HOST:PORT"),
            ('9090', 'admin_listen: expected "HOST:PORT" or false, got '
                     'number'),
            ('true', 'admin_listen: expected "HOST:PORT" or false'),
            ('""', "admin_listen: expected HOST:PORT, got ''"),
            ('"127.0.0.1:%d"' % port, "is the listen address"),
            ('"0.0.0.0:%d"' % port, "is the listen address")):
        with Folder(port=port, extra="  admin_listen = %s," % value) as f:
            rc, out, both = check(f)
            assert rc == 1, (value, both)
            assert want in both, (value, want, both)
            assert "walua.conf.lua" in both, both
    with Folder(port=port, extra='  admin_listen = "127.0.0.1:%d",'
                % free_port()) as f:
        rc, out, both = check(f)
        assert rc == 0, both


def test_admin_port_in_use_stops_the_start():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    d = Daemon()
    try:
        d.admin_port = taken.getsockname()[1]
        d.write("walua.conf.lua", d.config_text())
        d.start(wait=False)
        rc = d.proc.wait(15)
        log = d.log_text()
        assert rc == 1, (rc, log[-2000:])
        assert "cannot listen on admin_listen '127.0.0.1:%d'" % \
            d.admin_port in log, log[-2000:]
    finally:
        taken.close()
        d.__exit__(None, None, None)


def test_admin_listen_change_needs_restart():
    with Daemon() as d:
        old, new = d.admin_port, free_port()
        d.admin_port = new
        d.write("walua.conf.lua", d.config_text())
        d.signal(signal.SIGHUP)
        d.wait_log(lambda l: l.get("msg") == "reload ok")
        changed = d.find(lambda l: l.get("msg") ==
                         "setting changed: restart walua to apply it")
        assert [l["key"] for l in changed] == ["admin_listen"], changed
        st, _, _ = d.request("GET", "/healthz", port=old)
        assert st == 200, st
        try:
            d.request("GET", "/healthz", port=new, timeout=2)
            listening = True
        except OSError:
            listening = False
        assert not listening, "walua listens on the new admin port"
        d.admin_port = old
        assert d.stop() == 0
