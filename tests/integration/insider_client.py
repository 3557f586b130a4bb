"""insider_client.py - a fake Insider One acting as an OAuth2 client of
walua's token endpoint (Insider calls OUR token_url with client
credentials, caches the access token, sends it as a Bearer token with every
delivery, and stores one static refresh token).

    c = InsiderClient(d, "insider", SECRET, refresh_token=REFRESH)
    status, headers, body = c.deliver(text_body("hi", "wamid.X"))

The client fetches a token on its first delivery, reuses it afterwards, and
on a 401 from a delivery gets a new one (refresh_token grant when it has a
refresh token, else client_credentials) and tries that delivery once more.
Every token it was issued is kept in .issued (for the secret scans).
"""
import base64
import json
import re
import urllib.parse

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def form_encode(s):
    """application/x-www-form-urlencoded, as RFC 6749 §2.3.1 wants for the
    id and secret before they go into HTTP Basic."""
    return urllib.parse.quote_plus(s, safe="")


def basic_header(client_id, secret):
    raw = "%s:%s" % (form_encode(client_id), form_encode(secret))
    return "Basic " + base64.b64encode(raw.encode()).decode()


class InsiderClient:
    def __init__(self, daemon, client_id, client_secret, refresh_token=None,
                 token_path="/oauth/token",
                 endpoint="/webhooks/insider-oauth", auth="basic",
                 scopes=None):
        self.d = daemon
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.token_path = token_path
        self.endpoint = endpoint
        self.auth = auth                # "basic" or "post" (in the body)
        self.scopes = scopes            # None: ask for nothing
        self.token = None
        self.expires_in = None
        self.issued = []                # every access token received
        self.token_requests = 0
        self.renewals_on_401 = 0

    # token endpoint ------------------------------------------------------
    def token_request(self, grant_type="client_credentials"):
        """One form-encoded token request; (status, headers, parsed JSON)."""
        params = {"grant_type": grant_type}
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Accept": "application/json"}
        if self.auth == "basic":
            headers["Authorization"] = basic_header(self.client_id,
                                                    self.client_secret)
        else:
            params["client_id"] = self.client_id
            params["client_secret"] = self.client_secret
        if grant_type == "refresh_token":
            params["refresh_token"] = self.refresh_token
        if self.scopes:
            params["scope"] = " ".join(self.scopes)
        self.token_requests += 1
        st, h, body = self.d.request("POST", self.token_path,
                                     urllib.parse.urlencode(params), headers)
        try:
            j = json.loads(body)
        except ValueError:
            raise AssertionError("token endpoint answered %d with non-JSON "
                                 "%r" % (st, body[:300]))
        return st, h, j

    def fetch_token(self, grant_type="client_credentials"):
        st, h, j = self.token_request(grant_type)
        assert st == 200, ("token request (%s) refused" % grant_type, st, j)
        tok = j.get("access_token")
        assert isinstance(tok, str) and HEX64.match(tok), \
            "access_token is not 64 lower-case hex chars: %r" % j
        assert j.get("token_type") == "Bearer", j
        assert isinstance(j.get("expires_in"), int) and j["expires_in"] > 0, j
        if grant_type == "refresh_token":
            # refresh tokens are not rotated: the same one is echoed
            assert j.get("refresh_token") == self.refresh_token, j
        self.token = tok
        self.expires_in = j["expires_in"]
        self.issued.append(tok)
        return j

    def renew(self):
        if self.refresh_token:
            return self.fetch_token("refresh_token")
        return self.fetch_token("client_credentials")

    # deliveries ------------------------------------------------------------
    def post(self, body, token=None):
        h = {"Content-Type": "application/json",
             "Authorization": "Bearer " + (token or self.token)}
        if isinstance(body, str):
            body = body.encode()
        return self.d.request("POST", self.endpoint, body, h)

    def deliver(self, body):
        """POST body with the cached token (fetching one first if needed);
        on 401 renew the token once and retry."""
        if self.token is None:
            self.fetch_token()
        st, h, resp = self.post(body)
        if st == 401:
            self.renewals_on_401 += 1
            self.renew()
            st, h, resp = self.post(body)
        return st, h, resp
