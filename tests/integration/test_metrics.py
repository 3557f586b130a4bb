"""/metrics after a varied run: every family README, HTTP answers names,
and walua_outbound_requests_total and walua_provider_errors_total, is there,
with values that match what was done."""
import json
import re
import signal
import time
import urllib.request

from harness import Daemon, TOKEN, fixture, text_body

HANDLER = r'''
local log = require "walua.log"
local http = require "walua.http"
local settings = require "walua.settings"
return function(ev)
	if ev.text == "fail" then error("failing on purpose") end
	if ev.text == "call" then
		local res = http.get("http://" .. settings.admin_listen .. "/healthz")
		log.info("called", { status = res and res.status })
	end
	log.info("handled", { kind = ev.kind })
end
'''

FAMILIES = [
    "walua_http_requests_total", "walua_events_acked_total",
    "walua_events_duplicate_total", "walua_events_handled_total",
    "walua_events_retried_total", "walua_inbox_pending",
    "walua_inbox_inflight", "walua_inbox_oldest_pending_seconds",
    "walua_dead_letters", "walua_handler_duration_seconds",
    "walua_commit_duration_seconds", "walua_reloads_total",
    "walua_generation", "walua_workers", "walua_auth_failures_total",
    "walua_oauth_tokens_issued_total", "walua_outbound_requests_total",
    "walua_provider_errors_total",
]


def scrape(d):
    _, _, body = d.admin_request("GET", "/metrics")
    values = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values


def value(values, family, **labels):
    want = ",".join('%s="%s"' % kv for kv in labels.items())
    for k, v in values.items():
        if k == family or (k.startswith(family + "{") and
                           all('%s="%s"' % kv in k for kv in labels.items())):
            return v
    raise AssertionError("no %s{%s} in /metrics" % (family, want))


def test_metrics_after_a_varied_run():
    endpoints = ('{ { path = "/webhooks/insider", provider = "insider",'
                 ' auth = { type = "bearer", token = "%s" } },'
                 ' { path = "/webhooks/oauth", provider = "insider",'
                 ' auth = { type = "oauth2" } } }' % TOKEN)
    extra = ('oauth2 = { clients = { { id = "c", secret = "s3cret",'
             ' scopes = { "w" } } } },'
             'limits = { retries = 1, retry_backoff_ms = { 50 } },')
    with Daemon(handlers={"h.lua": HANDLER}, endpoints=endpoints,
                extra=extra) as d:
        d.deliver(text_body("hello", "wamid.M1"))
        d.deliver(text_body("hello", "wamid.M1"))            # duplicate
        d.deliver(text_body("fail", "wamid.M2"))             # retried, dead
        d.deliver(text_body("call", "wamid.M3"))             # outbound
        d.deliver(fixture("insider/b_error_cloud.json"))     # 130429
        d.deliver(fixture("insider/e_status_failed.json"))
        st, _, _ = d.post("/webhooks/insider", "{\"a\":1}", token="wrong")
        assert st == 401
        st, _, body = d.request("POST", "/oauth/token",
                                b"grant_type=client_credentials"
                                b"&client_id=c&client_secret=s3cret",
                                {"Content-Type":
                                 "application/x-www-form-urlencoded"})
        assert st == 200, body
        d.signal(signal.SIGHUP)
        d.wait_log(lambda l: l.get("msg") == "reload ok")
        d.wait_log(lambda l: l.get("msg") == "event dead-lettered")
        d.wait_log(lambda l: l.get("msg") == "called")
        d.wait_log(lambda l: l.get("msg") == "handled", count=4)
        time.sleep(0.6)     # the dead-letter count is refreshed every 0.5 s
        v = scrape(d)
        _, _, raw = d.admin_request("GET", "/metrics")
        text = raw.decode()
        missing = [f for f in FAMILIES if "# TYPE %s " % f not in text]
        assert not missing, "families missing from /metrics: %s" % missing
        assert value(v, "walua_http_requests_total",
                     endpoint="/webhooks/insider", code="200") == 6
        assert value(v, "walua_http_requests_total",
                     endpoint="/webhooks/insider", code="401") == 1
        assert value(v, "walua_events_acked_total", provider="insider",
                     kind="message") == 3
        assert value(v, "walua_events_acked_total", provider="insider",
                     kind="error") == 1
        assert value(v, "walua_events_duplicate_total") == 1
        assert value(v, "walua_events_handled_total", result="ok") == 4
        assert value(v, "walua_events_handled_total", result="error") == 2
        assert value(v, "walua_events_retried_total") == 1
        assert value(v, "walua_dead_letters") == 1
        assert value(v, "walua_inbox_pending") == 0
        assert value(v, "walua_handler_duration_seconds_count") == 6
        assert value(v, "walua_commit_duration_seconds_count") >= 1
        assert value(v, "walua_reloads_total", result="ok") == 1
        assert value(v, "walua_generation") == 2
        assert value(v, "walua_auth_failures_total",
                     endpoint="/webhooks/insider", reason="token") == 1
        assert value(v, "walua_oauth_tokens_issued_total") == 1
        assert value(v, "walua_outbound_requests_total", api="http",
                     code="200") == 1
        assert value(v, "walua_provider_errors_total", provider="insider",
                     code="130429") == 1
        assert value(v, "walua_provider_errors_total", provider="insider",
                     code="131047") == 1
        assert d.stop() == 0
