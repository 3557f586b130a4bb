-- insider-webhooks - manage Insider One's v2 (OAuth2) webhooks of a sender.
--
-- Uses the gateway credentials of walua's config (insider.client_id,
-- insider.client_secret, insider.gateway_url; INSIDER_CLIENT_ID,
-- INSIDER_CLIENT_SECRET and WALUA_INSIDER_GATEWAY_URL win over them).

local cli = require "walua.cli"
local insider = require "walua.insider"
local settings = require "walua.settings"

local USAGE = [[
usage: walua run insider-webhooks COMMAND --phone N [options] [--json]
  list                         the sender's webhooks (secrets masked)
  create --url URL --sub-product conversational|transactional
         [--events E,E] [--token-url URL] [--client-id ID]
         [--client-secret S] [--grant-type G] [--refresh-token T]
         [--scopes S,S] [--expires-in N]
  update --id ID [the same options but --sub-product]
  delete --id ID
--phone is the sender's number (digits).  The OAuth2 fields describe how
Insider gets tokens from walua: they default to walua's own token endpoint
settings (the first oauth2.clients entry, oauth2.token_ttl); --token-url
is walua's public token URL.  Events default to sent,delivered,read,
failed, plus reply for conversational webhooks.  update fills what is not
given from the current webhook, except the client secret, which a list
only shows masked: it comes from the flags or walua's config.]]

local opts, pos, usage_error, fail = cli.start("insider-webhooks", USAGE, { ... },
    { json = true })
local cmd = pos[1]
if not opts.phone then usage_error("--phone is required") end

local client = ((settings.oauth2 or {}).clients or {})[1] or {}

-- The oauth2 part of a spec, from flags, then base (a listed record,
-- snake_case), then walua's own token endpoint settings.
local function oauth2_spec(base)
	base = base or {}
	local grant = opts["grant-type"] or base.grant_type or
	    "client_credentials"
	local o = {
		grant_type = grant,
		token_url = opts["token-url"] or base.token_url,
		client_id = opts["client-id"] or base.client_id or client.id,
		-- never a secret read back from a list: it is masked there
		client_secret = opts["client-secret"] or client.secret,
		scopes = opts.scopes and cli.list(opts.scopes) or base.scopes or
		    (client.scopes and cli.list(table.concat(client.scopes, ","))),
		expires_in = tonumber(opts["expires-in"]) and
		    math.tointeger(tonumber(opts["expires-in"])) or
		    base.expires_in or (settings.oauth2 or {}).token_ttl or 3600,
	}
	if grant == "refresh_token" then
		o.refresh_token = opts["refresh-token"] or client.refresh_token
	end
	return o
end

local function show(records)
	local rows = {}
	for i, w in ipairs(records) do
		local o = w.oauth2 or {}
		rows[i] = { id = w.id, sub_product = w.sub_product,
		    webhook_url = w.webhook_url, events = w.events,
		    active = w.is_active, grant = o.grant_type,
		    client_id = o.client_id,
		    client_secret = cli.mask(o.client_secret) }
	end
	return cli.table(rows, { "id", "sub_product", "webhook_url", "events",
	    "active", "grant", "client_id", "client_secret" })
end

if cmd == "list" then
	local list, err = insider.webhooks.list(opts.phone)
	if not list then fail(err) end
	cli.output(opts, cli.masked(list), show(list))
elseif cmd == "create" then
	if not opts.url then usage_error("--url is required") end
	local sub = opts["sub-product"] or "conversational"
	local events = opts.events and cli.list(opts.events) or
	    cli.list(sub == "conversational" and "sent,delivered,read,failed,reply"
	    or "sent,delivered,read,failed")
	local id, err = insider.webhooks.create(opts.phone, {
	    sub_product = sub, webhook_url = opts.url, events = events,
	    auth_type = "oauth2", oauth2 = oauth2_spec() })
	if not id then fail(err) end
	cli.output(opts, { id = id }, "created webhook " .. tostring(id))
elseif cmd == "update" then
	if not opts.id then usage_error("--id is required") end
	if opts["sub-product"] then
		usage_error("--sub-product cannot change on update")
	end
	local list, err = insider.webhooks.list(opts.phone)
	if not list then fail(err) end
	local current
	for _, w in ipairs(list) do
		if tostring(w.id) == tostring(opts.id) then current = w end
	end
	if not current then fail("no webhook " .. opts.id .. " for " .. opts.phone) end
	local id
	id, err = insider.webhooks.update(opts.phone, opts.id, {
	    webhook_url = opts.url or current.webhook_url,
	    events = opts.events and cli.list(opts.events) or current.events,
	    auth_type = "oauth2", oauth2 = oauth2_spec(current.oauth2) })
	if not id then fail(err) end
	cli.output(opts, { id = id }, "updated webhook " .. tostring(id))
elseif cmd == "delete" then
	if not opts.id then usage_error("--id is required") end
	local ok, err = insider.webhooks.delete(opts.phone, opts.id)
	if not ok then fail(err) end
	cli.output(opts, { deleted = opts.id }, "deleted webhook " .. opts.id)
else
	usage_error(cmd and ("unknown command '" .. cmd .. "'") or "no command")
end
