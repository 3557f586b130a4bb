-- insider-settings - point Insider One's conversational webhook at walua.
--
-- v1 uses insider.auth_key (INSIDER_AUTH_KEY); v2 the gateway credentials
-- (insider.client_id/client_secret, INSIDER_CLIENT_ID/_SECRET).

local cli = require "walua.cli"
local insider = require "walua.insider"
local settings = require "walua.settings"

local USAGE = [[
usage: walua run insider-settings v1 --url URL [--api-key KEY] [--inactive]
       walua run insider-settings v2 --url URL [--from +N]
           --auth-type bearer [--api-key KEY]
         | --auth-type oauth2 --token-url URL [--client-id ID]
           [--client-secret S] [--grant-type G] [--refresh-token T]
           [--scopes S,S] [--expires-in N]
--url is walua's public endpoint URL.  --api-key defaults to the bearer
token of the walua endpoint with that path; the OAuth2 fields default to
walua's own token endpoint settings (first oauth2.clients entry,
oauth2.token_ttl).  Add --json for JSON.  Insider calls the URL to check it
when saving: walua answers that probe with 200.]]

local opts, pos, usage_error, fail = cli.start("insider-settings", USAGE, { ... },
    { json = true, inactive = true })
local version = pos[1]
if version ~= "v1" and version ~= "v2" then
	usage_error("say v1 or v2")
end
if not opts.url then usage_error("--url is required") end

-- The bearer token of walua's endpoint at --url's path, if any.
local function endpoint_token()
	local path = opts.url:match("^https?://[^/]+(/.*)$")
	for _, ep in ipairs(settings.endpoints or {}) do
		if ep.path == path and ep.auth and ep.auth.type == "bearer" then
			return ep.auth.token
		end
	end
end

local client = ((settings.oauth2 or {}).clients or {})[1] or {}
local res, err, shown
if version == "v1" then
	local key = opts["api-key"] or endpoint_token()
	res, err = insider.settings_v1{ is_active = not opts.inactive,
	    webhook_url = opts.url, api_key = key }
	shown = { version = "v1", webhook_url = opts.url,
	    is_active = not opts.inactive, api_key = cli.mask(key) }
else
	local t = { webhook_url = opts.url, from = opts.from,
	    auth_type = opts["auth-type"] }
	if t.auth_type == "bearer" then
		t.api_key = opts["api-key"] or endpoint_token()
	elseif t.auth_type == "oauth2" then
		local grant = opts["grant-type"] or "client_credentials"
		t.oauth2 = { grant_type = grant, token_url = opts["token-url"],
		    client_id = opts["client-id"] or client.id,
		    client_secret = opts["client-secret"] or client.secret,
		    scopes = opts.scopes and cli.list(opts.scopes) or
			(client.scopes and cli.list(table.concat(client.scopes, ","))),
		    expires_in = tonumber(opts["expires-in"]) and
			math.tointeger(tonumber(opts["expires-in"])) or
			(settings.oauth2 or {}).token_ttl or 3600 }
		if grant == "refresh_token" then
			t.oauth2.refresh_token = opts["refresh-token"] or
			    client.refresh_token
		end
	else
		usage_error("--auth-type must be bearer or oauth2")
	end
	res, err = insider.settings(t)
	shown = cli.masked(t)
	shown.version = "v2"
end
if not res then fail(err) end
local msg = type(res) == "table" and res.message or "saved"
cli.output(opts, { ok = true, message = msg, settings = shown },
    "saved (" .. version .. "): " .. tostring(msg))
