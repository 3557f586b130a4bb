"""walua run setup plan|apply (README, "Point Insider One / Kapso at walua"),
against the strict fakes of tests/fakes, which record every request and
refuse any field Insider One or Kapso do not document (and a masked secret
sent back).

The config names two Insider One senders (one on an oauth2 endpoint: a v2
webhook; one on a bearer endpoint: the v1 settings) and one Kapso config.
The tests assert the exit codes (plan: 0 nothing to do, 2 changes, 1 error),
what the fakes received (exact bodies), what was left alone, and that no
secret is ever printed: every output of a test is kept and searched for
each secret's first eight characters (the masks show at most four).

Every subprocess has a timeout, fakes and daemons are stopped, and the
credential variables are removed from the environment of each `walua run`.
"""
import json
import os
import shutil
import tempfile
import urllib.request

from harness import WALUA, Daemon, lua_str
from fake_insider import (FakeInsider, DEFAULT_AUTH_KEY, DEFAULT_CLIENT_ID,
                          DEFAULT_CLIENT_SECRET)
from fake_kapso import FakeKapso, DEFAULT_API_KEY
from test_outbound import clean_env, show

import subprocess

PUBLIC = "https://bot.example.com"
PHONE_A = "15551234567"         # oauth2 endpoint: a v2 webhook
PHONE_B = "15557654321"         # bearer endpoint: the v1 settings
OAUTH_SECRET = "OAS1-9f3k2m8q7w4e6r1t"
OAUTH_SECRET_2 = "OAS2-4b8n1v5c7x3z9a0s"
BEARER = "BRR1-5h2j8k4l6z0xq"
BEARER_2 = "BRR2-1q9w3e7r5t2yu"
KAPSO_SECRET = "KPS1-7c3v9b1n5m2l"
KAPSO_SECRET_2 = "KPS2-8d4f0g6h2j5k"
SECRETS = (OAUTH_SECRET, OAUTH_SECRET_2, BEARER, BEARER_2, KAPSO_SECRET,
           KAPSO_SECRET_2)
PROVIDER_SECRETS = (DEFAULT_AUTH_KEY, DEFAULT_CLIENT_SECRET, DEFAULT_API_KEY)
MASK = "********"
INSIDER_EVENTS = ["sent", "delivered", "read", "failed", "reply"]
KAPSO_EVENTS = ["whatsapp.message.received", "whatsapp.message.sent",
                "whatsapp.message.delivered", "whatsapp.message.read",
                "whatsapp.message.failed"]
TOKEN_TTL = 1800
WRITES = ("POST", "PUT", "PATCH", "DELETE")


class Setup:
    """A scratch folder with a config pointing at the fakes, and every
    output of `walua run setup` kept for the secrets check."""

    def __init__(self, ins, kap, public=PUBLIC, insider_setup=None,
                 kapso_setup=None, listen=None):
        self.dir = tempfile.mkdtemp(prefix="walua-setup-")
        self.ins, self.kap = ins, kap
        self.public = public
        self.listen = listen
        self.insider_setup = insider_setup or (
            '{ phone = "%s", endpoint = "/webhooks/insider-oauth" },\n'
            '    { phone = "+%s", endpoint = "/webhooks/insider" }'
            % (PHONE_A, PHONE_B))
        self.kapso_setup = kapso_setup or '{ config_id = %s }' % lua_str(
            kap.config_id)
        self.outputs = []
        self.conf = os.path.join(self.dir, "walua.conf.lua")
        self.write_conf()

    def write_conf(self, oauth_secret=OAUTH_SECRET, bearer=BEARER,
                   kapso_secret=KAPSO_SECRET):
        listen = ('listen = "%s",\n  admin_listen = false,\n' % self.listen
                  if self.listen else "")
        text = """return {
  %s  public_url = %s,
  endpoints = {
    { path = "/webhooks/insider", provider = "insider",
      auth = { type = "bearer", token = %s } },
    { path = "/webhooks/insider-oauth", provider = "insider",
      auth = { type = "oauth2" } },
    { path = "/webhooks/kapso", provider = "kapso",
      auth = { type = "kapso", secret = %s } },
  },
  oauth2 = { token_ttl = %d, clients = {
    { id = "insider", secret = %s, scopes = { "webhook.write" } } } },
  insider = { auth_key = %s, client_id = %s, client_secret = %s,
              api_url = %s, gateway_url = %s },
  kapso = { api_key = %s, api_url = %s },
  setup = {
    insider = { %s },
    kapso = { %s },
  },
}
""" % (listen, lua_str(self.public), lua_str(bearer), lua_str(kapso_secret),
            TOKEN_TTL, lua_str(oauth_secret), lua_str(DEFAULT_AUTH_KEY),
            lua_str(DEFAULT_CLIENT_ID), lua_str(DEFAULT_CLIENT_SECRET),
            lua_str(self.ins.api_url), lua_str(self.ins.gateway_url),
            lua_str(DEFAULT_API_KEY), lua_str(self.kap.api_url),
            self.insider_setup, self.kapso_setup)
        with open(self.conf, "w") as f:
            f.write(text)

    def run(self, *args, want=None, timeout=30):
        p = subprocess.run([WALUA, "run", "-c", self.conf, "setup"] +
                           list(args), capture_output=True, text=True,
                           timeout=timeout, cwd=self.dir, env=clean_env())
        self.outputs.append(p.stdout + p.stderr)
        if want is not None:
            assert p.returncode == want, "setup %s: expected exit %d, %s" % (
                " ".join(args), want, show(p))
        return p

    def json(self, *args, want=None):
        p = self.run(*(args + ("--json",)), want=want)
        try:
            return json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise AssertionError("setup %s --json: %s" % (" ".join(args),
                                                          show(p)))

    def assert_no_secret_printed(self):
        text = "\n".join(self.outputs)
        for s in SECRETS:
            assert s[:8] not in text, "secret %r printed:\n%s" % (s, text)
        for s in PROVIDER_SECRETS:
            assert s not in text, "secret %r printed:\n%s" % (s, text)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.assert_no_secret_printed()
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


def writes(srv):
    """The requests that change something, answered or not."""
    return [r for r in srv.requests if r["method"] in WRITES
            and r["path"] != "/auth/token"]


def no_masked_value_sent(*servers):
    for srv in servers:
        for r in srv.requests:
            assert MASK.encode() not in r["body"], (
                "a masked value was sent back", r["path"], r["body"])


def fakes():
    # every `walua run` is a process of its own, with a gateway token of
    # its own: a test makes more than Insider One's ten a minute
    return (FakeInsider(phones=(PHONE_A, PHONE_B), token_rate_limit=None),
            FakeKapso())


def insider_token(ins):
    req = urllib.request.Request(
        ins.gateway_url + "/auth/token", method="POST",
        data=json.dumps({"client_id": DEFAULT_CLIENT_ID,
                         "client_secret": DEFAULT_CLIENT_SECRET,
                         "scopes": ["wa-webhook-manage"]}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["access_token"]


def seed_insider(ins, phone, url):
    """A conversational v2 webhook made by someone else than walua."""
    body = {"authType": "oauth2", "subProduct": "conversational",
            "webhookUrl": url, "events": ["reply", "read"],
            "oauth2": {"grantType": "client_credentials",
                       "tokenUrl": "https://auth.example.org/token",
                       "clientId": "someone-else",
                       "clientSecret": "someone-elses-secret-value",
                       "expiresIn": 3600}}
    req = urllib.request.Request(
        ins.gateway_url + "/api/wa/v2/webhooks?phoneNumber=" + phone,
        method="POST", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 "Authorization": "Bearer " + insider_token(ins)})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["webhook"]


def seed_kapso(kap, url):
    req = urllib.request.Request(
        "%s/whatsapp_configs/%s/whatsapp_webhooks" % (kap.api_url,
                                                      kap.config_id),
        method="POST", data=json.dumps({"whatsapp_webhook": {
            "url": url, "secret_key": "someone-elses-kapso-secret",
            "events": ["whatsapp.message.received"]}}).encode(),
        headers={"Content-Type": "application/json",
                 "X-API-Key": DEFAULT_API_KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["data"]["id"]


# from nothing to everything, and then nothing to do ------------------------
def test_setup_from_empty_providers_creates_exactly_the_documented_fields():
    ins, kap = fakes()
    with ins, kap, Setup(ins, kap) as s:
        p = s.run("plan", want=2)
        for line in (
                "+ create insider %s webhook %s/webhooks/insider-oauth"
                % (PHONE_A, PUBLIC),
                "+ create insider account v1 settings %s/webhooks/insider"
                % PUBLIC,
                "+ create kapso %s webhook %s/webhooks/kapso"
                % (kap.config_id, PUBLIC),
                "      oauth2.client_secret: OAS1" + MASK,
                "Plan: 3 to create, 0 to update, 0 to delete."):
            assert line in p.stdout.splitlines(), (line, show(p))
        j = s.json("plan", want=2)
        assert [(c["action"], c["provider"], c["target"], c["what"])
                for c in j["changes"]] == [
            ("create", "insider", PHONE_A, "webhook"),
            ("create", "insider", "account", "v1 settings"),
            ("create", "kapso", kap.config_id, "webhook")], j
        assert j["summary"] == {"create": 3, "update": 0, "delete": 0}, j
        assert writes(ins) == [] and writes(kap) == [], "plan wrote"

        p = s.run("apply", want=0)
        assert "Apply complete: 3 created, 0 updated, 0 deleted." in \
            p.stdout, show(p)
        creates = [r for r in writes(ins) if r["path"] ==
                   "/api/wa/v2/webhooks"]
        assert len(creates) == 1 and creates[0]["method"] == "POST"
        assert creates[0]["query"] == {"phoneNumber": [PHONE_A]}
        assert creates[0]["json"] == {
            "authType": "oauth2", "subProduct": "conversational",
            "webhookUrl": PUBLIC + "/webhooks/insider-oauth",
            "events": INSIDER_EVENTS,
            "oauth2": {"grantType": "client_credentials",
                       "tokenUrl": PUBLIC + "/oauth/token",
                       "clientId": "insider", "clientSecret": OAUTH_SECRET,
                       "scopes": ["webhook.write"],
                       "expiresIn": TOKEN_TTL}}, creates[0]["json"]
        v1 = [r for r in writes(ins)
              if r["path"] == "/v1/conversational/settings/update"]
        assert len(v1) == 1 and v1[0]["json"] == {
            "isActive": True, "webhookUrl": PUBLIC + "/webhooks/insider",
            "apiKey": BEARER}, v1
        assert len(writes(ins)) == 2, [r["path"] for r in writes(ins)]
        kw = writes(kap)
        assert len(kw) == 1 and kw[0]["method"] == "POST"
        assert kw[0]["json"] == {"whatsapp_webhook": {
            "url": PUBLIC + "/webhooks/kapso", "secret_key": KAPSO_SECRET,
            "events": KAPSO_EVENTS, "active": True}}, kw[0]["json"]
        assert all(r["status"] in (200, 201) for r in ins.requests +
                   kap.requests), [(r["path"], r["status"])
                                   for r in ins.requests + kap.requests]

        p = s.run("plan", want=0)
        assert "No changes" in p.stdout, show(p)
        assert s.json("plan", want=0)["summary"] == {
            "create": 0, "update": 0, "delete": 0}
        ins.clear()
        kap.clear()
        p = s.run("apply", want=0)          # idempotent
        assert "No changes" in p.stdout, show(p)
        assert writes(ins) == [] and writes(kap) == [], "a second apply wrote"


def test_setup_rotated_secrets_update_that_webhook_only():
    ins, kap = fakes()
    with ins, kap, Setup(ins, kap) as s:
        s.run("apply", want=0)
        assert ins.webhooks()[0]["oauth2"]["clientSecret"] == OAUTH_SECRET

        # walua's OAuth2 client secret: the v2 webhook only
        s.write_conf(oauth_secret=OAUTH_SECRET_2)
        j = s.json("plan", want=2)
        assert j["summary"] == {"create": 0, "update": 1, "delete": 0}, j
        c = j["changes"][0]
        assert (c["provider"], c["target"], c["id"]) == ("insider", PHONE_A,
                                                        84), c
        assert [f["name"] for f in c["fields"]] == ["oauth2.client_secret"]
        assert c["fields"][0]["new"] == "OAS2" + MASK, c
        p = s.run("plan", want=2)
        assert "      oauth2.client_secret: OAS%s -> OAS2%s (changed)" % (
            MASK, MASK) in p.stdout.splitlines(), show(p)
        ins.clear()
        kap.clear()
        s.run("apply", want=0)
        w = writes(ins)
        assert [(r["method"], r["path"]) for r in w] == [
            ("PUT", "/api/wa/v2/webhooks/84")], w
        assert w[0]["json"]["oauth2"]["clientSecret"] == OAUTH_SECRET_2
        assert "subProduct" not in w[0]["json"]
        assert writes(kap) == []
        assert ins.webhooks()[0]["oauth2"]["clientSecret"] == OAUTH_SECRET_2
        s.run("plan", want=0)

        # the bearer endpoint's token: the v1 settings only
        s.write_conf(oauth_secret=OAUTH_SECRET_2, bearer=BEARER_2)
        j = s.json("plan", want=2)
        assert [(c["action"], c["what"], [f["name"] for f in c["fields"]])
                for c in j["changes"]] == [
            ("update", "v1 settings", ["api_key"])], j
        ins.clear()
        s.run("apply", want=0)
        assert [r["json"] for r in writes(ins)] == [{
            "isActive": True, "webhookUrl": PUBLIC + "/webhooks/insider",
            "apiKey": BEARER_2}], writes(ins)
        s.run("plan", want=0)

        # the Kapso endpoint's secret: that webhook only, and only the key
        s.write_conf(oauth_secret=OAUTH_SECRET_2, bearer=BEARER_2,
                     kapso_secret=KAPSO_SECRET_2)
        j = s.json("plan", want=2)
        assert [(c["provider"], [f["name"] for f in c["fields"]])
                for c in j["changes"]] == [("kapso", ["secret_key"])], j
        ins.clear()
        kap.clear()
        s.run("apply", want=0)
        assert writes(ins) == []
        assert [(r["method"], r["json"]) for r in writes(kap)] == [
            ("PATCH", {"whatsapp_webhook": {"secret_key": KAPSO_SECRET_2}})]
        s.run("plan", want=0)
        no_masked_value_sent(ins, kap)


def test_setup_leaves_other_webhooks_alone_and_deletes_stale_ones():
    ins, kap = fakes()
    with ins, kap, Setup(ins, kap) as s:
        other = seed_insider(ins, PHONE_A, "https://other.example.com/hook")
        # starts like public_url but is another host: not walua's
        lookalike = seed_insider(ins, PHONE_A, PUBLIC + ".evil.example/hook")
        stale = seed_insider(ins, PHONE_A, PUBLIC + "/webhooks/old")
        stale_b = seed_insider(ins, PHONE_B, PUBLIC + "/webhooks/insider-oauth")
        k_other = seed_kapso(kap, "https://other.example.com/kapso")
        k_stale = seed_kapso(kap, PUBLIC + "/webhooks/old-kapso")
        ins.clear()
        kap.clear()

        j = s.json("plan", want=2)
        deletes = sorted((c["provider"], c["target"], str(c["id"]))
                         for c in j["changes"] if c["action"] == "delete")
        assert deletes == sorted([
            ("insider", PHONE_A, str(stale)), ("insider", PHONE_B,
                                               str(stale_b)),
            ("kapso", kap.config_id, k_stale)]), j
        assert sorted(str(l["id"]) for l in j["left_alone"]) == sorted(
            [str(other), str(lookalike), k_other]), j
        assert j["summary"] == {"create": 3, "update": 0, "delete": 3}, j
        # creates come first, deletes last
        actions = [c["action"] for c in j["changes"]]
        assert actions == sorted(actions, key=["create", "update",
                                               "delete"].index), actions
        p = s.run("plan", want=2)
        assert ("  left alone: insider %s webhook %s "
                "https://other.example.com/hook (not under public_url)"
                % (PHONE_A, other)) in p.stdout.splitlines(), show(p)

        s.run("apply", want=0)
        urls = sorted(w["webhookUrl"] for w in ins.webhooks(PHONE_A))
        assert urls == sorted(["https://other.example.com/hook",
                               PUBLIC + ".evil.example/hook",
                               PUBLIC + "/webhooks/insider-oauth"]), urls
        assert ins.webhooks(PHONE_B) == []
        assert sorted(w["url"] for w in kap.webhooks()) == sorted([
            "https://other.example.com/kapso", PUBLIC + "/webhooks/kapso"])
        w = [(r["method"], r["path"]) for r in writes(ins)]
        first_delete = min(i for i, x in enumerate(w) if x[0] == "DELETE")
        assert all(x[0] != "POST" for x in w[first_delete:]), w
        assert sorted(p for m, p in w if m == "DELETE") == sorted([
            "/api/wa/v2/webhooks/%s" % stale,
            "/api/wa/v2/webhooks/%s" % stale_b]), w
        s.run("plan", want=0)
        no_masked_value_sent(ins, kap)


def test_setup_stops_at_a_provider_error_and_a_second_apply_finishes():
    ins, kap = fakes()
    two_v2 = ('{ phone = "%s", endpoint = "/webhooks/insider-oauth" },\n'
              '    { phone = "%s", endpoint = "/webhooks/insider-oauth" }'
              % (PHONE_A, PHONE_B))
    err = {"message": "failed to validate request", "errorCode": "2011"}
    with ins, kap, Setup(ins, kap, insider_setup=two_v2) as s:
        ins.fail_nth(2, 400, err, path="/api/wa/v2/webhooks", method="POST")
        p = s.run("apply", want=1)
        lines = p.stdout.splitlines()
        url = PUBLIC + "/webhooks/insider-oauth"
        assert "done: create insider %s webhook 84 %s" % (PHONE_A, url) in \
            lines, show(p)
        assert ("FAILED: create insider %s webhook %s: failed to validate "
                "request (code 2011) [HTTP 400]" % (PHONE_B, url)) in lines, \
            show(p)
        assert "not done: create kapso %s webhook %s/webhooks/kapso" % (
            kap.config_id, PUBLIC) in lines, show(p)
        assert "1 done, 1 failed, 1 not done" in p.stdout, show(p)
        assert [w["phoneNumber"] for w in ins.webhooks()] == [PHONE_A]
        assert kap.webhooks() == []

        # the same again, in JSON: the plan is now the two left
        ins.fail_nth(1, 400, err, path="/api/wa/v2/webhooks", method="POST")
        j = s.json("apply", want=1)
        assert j["done"] == [], j
        assert (j["failed"]["target"], j["failed"]["error"]["code"],
                j["failed"]["error"]["status"]) == (PHONE_B, "2011", 400), j
        assert [(c["provider"], c["action"]) for c in j["not_done"]] == [
            ("kapso", "create")], j

        p = s.run("apply", want=0)          # fixed: finishes the rest
        assert "Apply complete: 2 created, 0 updated, 0 deleted." in \
            p.stdout, show(p)
        assert sorted(w["phoneNumber"] for w in ins.webhooks()) == [
            PHONE_A, PHONE_B]
        assert len(kap.webhooks()) == 1
        s.run("plan", want=0)


def test_setup_plan_errors_usage_and_check():
    ins, kap = fakes()
    with ins, kap, Setup(ins, kap) as s:
        ins.maintenance = True
        p = s.run("plan", want=1)
        assert "cannot list webhooks" in p.stderr, show(p)
        ins.maintenance = False
        p = s.run(want=2)
        assert "usage" in p.stderr, show(p)
        s.run("plan", "--verify", want=2)
        p = s.run("--help", want=0)
        assert "plan" in p.stdout and "apply" in p.stdout

        # walua check: the setup table is validated with the config
        def check(insider_setup=None, kapso_setup=None, public=PUBLIC):
            t = Setup(ins, kap, public=public, insider_setup=insider_setup,
                      kapso_setup=kapso_setup)
            try:
                return subprocess.run([WALUA, "check", "-c", t.conf],
                                      capture_output=True, text=True,
                                      timeout=30, env=clean_env())
            finally:
                shutil.rmtree(t.dir, ignore_errors=True)

        p = check()
        assert p.returncode == 0 and "configuration ok" in p.stdout, show(p)
        for ins_setup, kapso_setup, public, want in (
                ('{ phone = "%s", endpoit = "/x" }' % PHONE_A, None, PUBLIC,
                 "setup.insider[1].endpoit: unknown key"),
                ('{ phone = "%s" }' % PHONE_A, None, PUBLIC,
                 "setup.insider[1].endpoint: missing, and 2 endpoints fit"),
                ('{ phone = "%s", endpoint = "/nope" }' % PHONE_A, None,
                 PUBLIC, "no endpoint has the path '/nope'"),
                ('{ phone = "%s", endpoint = "/webhooks/kapso" }' % PHONE_A,
                 None, PUBLIC, "'/webhooks/kapso' does not fit"),
                ('{ phone = "%s", endpoint = "/webhooks/insider", events = '
                 '{ "reply" } }' % PHONE_A, None, PUBLIC,
                 "setup.insider[1].events: not used with a bearer endpoint"),
                ('{ phone = "%s", endpoint = "/webhooks/insider-oauth", '
                 'events = { "read" } }' % PHONE_A, None, PUBLIC,
                 'must include "reply"'),
                ('{ phone = "%s", endpoint = "/webhooks/insider-oauth", '
                 'events = { "reply", "seen" } }' % PHONE_A, None, PUBLIC,
                 "setup.insider[1].events[2]: must be one of"),
                ('{ phone = "%s", endpoint = "/webhooks/insider-oauth" }, '
                 '{ phone = "+%s", endpoint = "/webhooks/insider-oauth" }'
                 % (PHONE_A, PHONE_A), None, PUBLIC, "is listed twice"),
                (None, '{ config_id = "x", endpoint = "/webhooks/insider" }',
                 PUBLIC, "setup.kapso[1].endpoint: '/webhooks/insider' "
                 "does not fit"),
                (None, None, "ftp://bot.example.com",
                 "public_url: expected http(s)://host"),
        ):
            p = check(ins_setup, kapso_setup, public)
            assert p.returncode == 1 and want in p.stderr + p.stdout, (
                want, show(p))
        # the common case, one line per number: the only endpoint that fits
        p = check(None, '{ config_id = "x" }, { config_id = "y" }')
        assert p.returncode == 0, show(p)


def test_setup_apply_verify_posts_a_signed_delivery_to_each_endpoint():
    ins, kap = fakes()
    d = Daemon(config="return {}")      # its folder, port and log
    public = "http://127.0.0.1:%d" % d.port
    with ins, kap, Setup(ins, kap, public=public,
                         listen="127.0.0.1:%d" % d.port) as s:
        shutil.copy(s.conf, d.conf)
        handler = d.write("handler.lua", LOG_STATUSES)
        with open(d.conf) as f:
            text = f.read()
        with open(d.conf, "w") as f:
            f.write(text.replace("return {", "return {\n  handlers = { %s },"
                                 % lua_str(handler), 1))
        d.admin_port = None
        with d:
            p = s.run("apply", "--verify", want=0)
            for path in ("/webhooks/insider-oauth", "/webhooks/insider",
                         "/webhooks/kapso"):
                assert any(l.startswith("verify ") and (public + path + ":")
                           in l and "walua took it" in l
                           for l in p.stdout.splitlines()), (path, show(p))
            seen = d.wait_log(lambda l: l.get("msg") == "verified", count=3)
            assert sorted(l["endpoint"] for l in seen) == [
                "/webhooks/insider", "/webhooks/insider-oauth",
                "/webhooks/kapso"], seen
            assert all(l["status"] == "sent" for l in seen), seen

            # the config setup reads says another token than the running
            # walua's: the provider would be refused, and verify says so
            s.write_conf(bearer=BEARER_2)
            j = s.json("apply", "--verify", want=1)
            bad = [v for v in j["verify"] if not v["received"]]
            assert [v["endpoint"] for v in bad] == ["/webhooks/insider"], j
            assert bad[0]["status"] == 401, bad


LOG_STATUSES = r'''
local log = require "walua.log"
return function(ev)
	log.info("verified", { endpoint = ev.endpoint, status = ev.status,
	    kind = ev.kind })
end
'''
