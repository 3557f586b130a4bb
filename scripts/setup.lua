-- setup - make Insider One and Kapso point at walua, from walua's config.
--
--   walua run setup plan  [--json]            what apply would change
--   walua run setup apply [--verify] [--json] make those changes
--
-- The config's `setup` table names, for each Insider One sender and each
-- Kapso WhatsApp config, the walua endpoint it should deliver to; the rest
-- (URL, auth, OAuth2 client, secret) follows from walua's own endpoints,
-- oauth2 settings and public_url.  plan reads what the providers have
-- through walua.insider and walua.kapso and compares; apply makes the
-- changes, the new before the old goes, and stops at the first error.
-- Only webhooks whose URL is under public_url are ever changed or
-- deleted: anything else on the providers is someone else's.
--
-- Insider One's v1 settings (a bearer endpoint) cannot be read back, so
-- what walua last saved there is remembered in its database (walua.store:
-- the URL and the SHA-256 of the token, never the token) and compared
-- with that.

local cli = require "walua.cli"
local crypto = require "walua.crypto"
local insider = require "walua.insider"
local json = require "walua.json"
local kapso = require "walua.kapso"
local settings = require "walua.settings"
local simulate = require "walua.simulate"
local store = require "walua.store"

local USAGE = [[
usage: walua run setup plan [--json]
       walua run setup apply [--verify] [--json]
plan prints what apply would create, update and delete on Insider One and
Kapso so that the numbers and configs of the config's `setup` table
deliver to walua's endpoints at public_url; it exits 0 when there is
nothing to do, 2 when there are changes, 1 on error.  apply makes them
(creates first, deletes last), stops at the first provider error and
says what was done; run it again to finish.  --verify, after apply,
posts a simulated signed delivery (a "sent" status) to each endpoint's
public URL and reports whether walua took it.  Secrets are shown masked.]]

local opts, pos, usage_error, fail = cli.start("setup", USAGE, { ... },
    { json = true, verify = true })
local cmd = pos[1]
if cmd ~= "plan" and cmd ~= "apply" then
	usage_error(cmd and ("unknown command '" .. cmd .. "'") or "no command")
end
if opts.verify and cmd ~= "apply" then
	usage_error("--verify goes with apply")
end

local public = settings.public_url
local setup = settings.setup or {}
local oauth2 = settings.oauth2 or {}

-- Helpers -----------------------------------------------------------------

-- Is url one of this walua's, i.e. under public_url?  Only those are
-- ever updated or deleted.
local function ours(url)
	return type(url) == "string" and (url == public or
	    url:sub(1, #public + 1) == public .. "/")
end

local function endpoint(path)
	for _, ep in ipairs(settings.endpoints or {}) do
		if ep.path == path then return ep end
	end
end

local function client(id)
	for _, c in ipairs(oauth2.clients or {}) do
		if c.id == id then return c end
	end
end

local function array(t)
	local out = {}
	for i, v in ipairs(t or {}) do out[i] = v end
	return json.array(out)
end

-- Lists compared as sets: the order of events or scopes means nothing.
local function same_set(a, b)
	local x, y = array(a), array(b)
	table.sort(x)
	table.sort(y)
	return table.concat(x, "\0") == table.concat(y, "\0")
end

local function joined(t)
	if type(t) ~= "table" then return tostring(t) end
	return table.concat(array(t), ",")
end

-- A secret as it may be printed: its first few characters.  A value the
-- provider showed masked is masked again from its visible start, so no
-- more of it is printed than of any other secret.
local function shown(s)
	if type(s) ~= "string" then return s end
	return cli.mask((s:gsub("%*+$", "")))
end

-- Does secret match what the provider shows?  Insider One shows a secret's
-- first characters, then asterisks: it matches when it starts with them.
-- (A new secret that starts with the same characters is not seen as new.)
-- A value shown in clear must be equal.
local function same_secret(seen, secret)
	if type(seen) ~= "string" or type(secret) ~= "string" then
		return seen == secret
	end
	local prefix = seen:match("^(.-)%*%*%*%*+$")
	if prefix == nil then return seen == secret end
	return secret:sub(1, #prefix) == prefix
end

-- The plan -----------------------------------------------------------------
--
-- A change: { action = "create"|"update"|"delete", provider, target (the
-- phone, the config id or "account"), what ("webhook"|"v1 settings"),
-- id, url, fields = { { name, old, new } } (printable: secrets masked),
-- run = function() -> id | nil, err }.

local changes, left_alone, notes = {}, {}, {}

local function change(t)
	t.fields = t.fields or {}
	return t
end

local function add(c)
	changes[#changes + 1] = change(c)
end

-- secret: old and new are masked, and may look alike when they differ.
local function field(c, name, old, new, secret)
	c.fields[#c.fields + 1] = { name = name, old = old, new = new,
	    secret = secret }
end

local function leave(provider, target, w, url)
	left_alone[#left_alone + 1] = { provider = provider, target = target,
	    id = w.id, url = url, reason = "not under public_url" }
end

-- Insider One v2 webhook: what a conversational entry with an oauth2
-- endpoint should have (snake_case, as walua.insider takes it).
local function insider_spec(e)
	local c = client(e.client)
	local o = { grant_type = "client_credentials",
	    token_url = public .. (oauth2.path or "/oauth/token"),
	    client_id = c.id, client_secret = c.secret,
	    expires_in = oauth2.token_ttl or 3600 }
	if c.scopes and #c.scopes > 0 then o.scopes = array(c.scopes) end
	return { sub_product = "conversational", webhook_url = public ..
	    e.endpoint, events = array(e.events), auth_type = "oauth2",
	    oauth2 = o }
end

local OAUTH2_FIELDS = { "grant_type", "token_url", "client_id",
    "expires_in" }

-- The fields of an existing webhook w that differ from spec.
local function insider_diff(c, w, spec)
	if not same_set(w.events, spec.events) then
		field(c, "events", joined(w.events), joined(spec.events))
	end
	local have, want = w.oauth2 or {}, spec.oauth2
	for _, k in ipairs(OAUTH2_FIELDS) do
		if have[k] ~= want[k] then
			field(c, "oauth2." .. k, have[k], want[k])
		end
	end
	if not same_set(have.scopes, want.scopes) then
		field(c, "oauth2.scopes", joined(have.scopes), joined(want.scopes))
	end
	if not same_secret(have.client_secret, want.client_secret) then
		field(c, "oauth2.client_secret", shown(have.client_secret),
		    shown(want.client_secret), true)
	end
end

local function insider_create_fields(c, spec)
	field(c, "sub_product", nil, spec.sub_product)
	field(c, "events", nil, joined(spec.events))
	field(c, "auth_type", nil, spec.auth_type)
	for _, k in ipairs(OAUTH2_FIELDS) do
		field(c, "oauth2." .. k, nil, spec.oauth2[k])
	end
	if spec.oauth2.scopes then
		field(c, "oauth2.scopes", nil, joined(spec.oauth2.scopes))
	end
	field(c, "oauth2.client_secret", nil, shown(spec.oauth2.client_secret),
	    true)
end

local function plan_insider_phone(e)
	local ep = endpoint(e.endpoint)
	local conf = settings.insider or {}
	if ep.auth.type == "bearer" and not (conf.client_id and
	    conf.client_secret) then
		-- nothing to create there; without gateway credentials its
		-- v2 webhooks cannot be read, so none is deleted either
		notes[#notes + 1] = "insider " .. e.phone .. ": v2 webhooks " ..
		    "not read (no insider.client_id and client_secret)"
		return true
	end
	local list, err = insider.webhooks.list(e.phone)
	if not list then
		return nil, "insider " .. e.phone .. ": cannot list webhooks: " ..
		    tostring(err)
	end
	local spec = ep.auth.type == "oauth2" and insider_spec(e) or nil
	local found
	for _, w in ipairs(list) do
		if not ours(w.webhook_url) then
			leave("insider", e.phone, w, w.webhook_url)
		elseif spec and not found and w.webhook_url == spec.webhook_url
		    and w.sub_product == spec.sub_product then
			found = w
		end
	end
	if spec and found then
		local c = change{ action = "update", provider = "insider",
		    target = e.phone, what = "webhook", id = found.id,
		    url = spec.webhook_url }
		insider_diff(c, found, spec)
		if #c.fields > 0 then
			-- the whole body again (PUT), with the secret from
			-- walua's config: never the masked one a list shows
			local body = { webhook_url = spec.webhook_url,
			    events = spec.events, auth_type = spec.auth_type,
			    oauth2 = spec.oauth2 }
			c.run = function()
				return insider.webhooks.update(e.phone, found.id, body)
			end
			add(c)
		end
	elseif spec then
		local c = change{ action = "create", provider = "insider",
		    target = e.phone, what = "webhook", url = spec.webhook_url }
		insider_create_fields(c, spec)
		c.run = function() return insider.webhooks.create(e.phone, spec) end
		add(c)
	end
	for _, w in ipairs(list) do
		if ours(w.webhook_url) and w ~= found then
			add({ action = "delete", provider = "insider",
			    target = e.phone, what = "webhook", id = w.id,
			    url = w.webhook_url, run = function()
				return insider.webhooks.delete(e.phone, w.id)
			    end })
		end
	end
	return true
end

-- Insider One v1 settings: one webhook per account (per auth key), which
-- the API does not show; compared with what walua last saved.
local function v1_key(conf)
	return "walua.setup.insider.v1:" ..
	    crypto.sha256(conf.api_url .. "\0" .. conf.auth_key):sub(1, 16)
end

local function plan_insider_v1(path)
	local conf = settings.insider or {}
	if not conf.auth_key then
		return nil, "insider.auth_key is not configured (needed to " ..
		    "save the v1 settings of the bearer endpoint " .. path .. ")"
	end
	local token = endpoint(path).auth.token
	local want = { webhook_url = public .. path,
	    api_key_sha256 = crypto.sha256(token) }
	local key = v1_key(conf)
	local last = store.get(key)
	local c = change{ provider = "insider", target = "account",
	    what = "v1 settings", url = want.webhook_url }
	if type(last) ~= "table" then
		c.action = "create"
		field(c, "is_active", nil, true)
		field(c, "webhook_url", nil, want.webhook_url)
		field(c, "api_key", nil, shown(token), true)
		c.note = "Insider One does not show its v1 settings: never " ..
		    "saved from this walua database"
	else
		c.action = "update"
		if last.webhook_url ~= want.webhook_url then
			field(c, "webhook_url", last.webhook_url, want.webhook_url)
		end
		if last.api_key_sha256 ~= want.api_key_sha256 then
			field(c, "api_key", "(the token saved before)",
			    shown(token), true)
		end
		if #c.fields == 0 then return true end
	end
	c.run = function()
		local ok, err = insider.settings_v1{ is_active = true,
		    webhook_url = want.webhook_url, api_key = token }
		if not ok then return nil, err end
		want.saved_at = os.date("!%Y-%m-%dT%H:%M:%SZ")
		store.set(key, want)
		return true
	end
	add(c)
	return true
end

-- Kapso: the webhooks of a WhatsApp config.
local function kapso_spec(e)
	return { url = public .. e.endpoint,
	    secret_key = endpoint(e.endpoint).auth.secret,
	    events = array(e.events), active = true }
end

local function plan_kapso_config(e)
	local list, err = kapso.webhooks.list(e.config_id)
	if not list then
		return nil, "kapso " .. e.config_id .. ": cannot list webhooks: " ..
		    tostring(err)
	end
	local spec = kapso_spec(e)
	local found
	for _, w in ipairs(list) do
		if not ours(w.url) then
			leave("kapso", e.config_id, w, w.url)
		elseif not found and w.url == spec.url then
			found = w
		end
	end
	if found then
		-- PATCH only what differs
		local c = change{ action = "update", provider = "kapso",
		    target = e.config_id, what = "webhook", id = found.id,
		    url = spec.url }
		local patch = {}
		if not same_set(found.events, spec.events) then
			field(c, "events", joined(found.events), joined(spec.events))
			patch.events = spec.events
		end
		if found.active ~= true then
			field(c, "active", found.active, true)
			patch.active = true
		end
		if not same_secret(found.secret_key, spec.secret_key) then
			field(c, "secret_key", shown(found.secret_key),
			    shown(spec.secret_key), true)
			patch.secret_key = spec.secret_key
		end
		if next(patch) then
			c.run = function()
				local w, werr = kapso.webhooks.update(e.config_id,
				    found.id, patch)
				if not w then return nil, werr end
				return found.id
			end
			add(c)
		end
	else
		local c = change{ action = "create", provider = "kapso",
		    target = e.config_id, what = "webhook", url = spec.url }
		field(c, "events", nil, joined(spec.events))
		field(c, "active", nil, true)
		field(c, "secret_key", nil, shown(spec.secret_key), true)
		c.run = function()
			local w, werr = kapso.webhooks.create(e.config_id, spec)
			if not w then return nil, werr end
			return w.id or true
		end
		add(c)
	end
	for _, w in ipairs(list) do
		if ours(w.url) and w ~= found then
			add({ action = "delete", provider = "kapso",
			    target = e.config_id, what = "webhook", id = w.id,
			    url = w.url, run = function()
				return kapso.webhooks.delete(e.config_id, w.id)
			    end })
		end
	end
	return true
end

local function make_plan()
	if #(setup.insider or {}) + #(setup.kapso or {}) == 0 then
		return nil, "the config's setup table names no Insider One " ..
		    "number and no Kapso config"
	end
	local v1_done = false
	for _, e in ipairs(setup.insider or {}) do
		local ok, err = plan_insider_phone(e)
		if not ok then return nil, err end
		if endpoint(e.endpoint).auth.type == "bearer" and not v1_done then
			v1_done = true
			ok, err = plan_insider_v1(e.endpoint)
			if not ok then return nil, err end
		end
	end
	for _, e in ipairs(setup.kapso or {}) do
		local ok, err = plan_kapso_config(e)
		if not ok then return nil, err end
	end
	-- the safe order: what is new exists before what it replaces goes
	local rank = { create = 1, update = 2, delete = 3 }
	for i, c in ipairs(changes) do c.order = i end
	table.sort(changes, function(a, b)
		if rank[a.action] ~= rank[b.action] then
			return rank[a.action] < rank[b.action]
		end
		return a.order < b.order
	end)
	return true
end

-- Output -------------------------------------------------------------------

local SIGN = { create = "+", update = "~", delete = "-" }

local function title(c)
	local s = c.action .. " " .. c.provider .. " " .. c.target .. " " ..
	    c.what
	if c.id ~= nil then s = s .. " " .. tostring(c.id) end
	return s .. " " .. c.url
end

-- A change as printed in JSON: no function, secrets already masked.
local function public_change(c, extra)
	local fields = {}
	for i, f in ipairs(c.fields) do
		fields[i] = { name = f.name, old = f.old, new = f.new,
		    secret = f.secret }
	end
	local t = { action = c.action, provider = c.provider,
	    target = c.target, what = c.what, id = c.id, url = c.url,
	    fields = json.array(fields), note = c.note }
	for k, v in pairs(extra or {}) do t[k] = v end
	return t
end

local function value(v)
	if v == nil then return "(none)" end
	return tostring(v)
end

local function change_lines(c, lines)
	lines[#lines + 1] = SIGN[c.action] .. " " .. title(c)
	for _, f in ipairs(c.fields) do
		if c.action == "create" then
			lines[#lines + 1] = "      " .. f.name .. ": " .. value(f.new)
		else
			lines[#lines + 1] = "      " .. f.name .. ": " ..
			    value(f.old) .. " -> " .. value(f.new) ..
			    (f.secret and " (changed)" or "")
		end
	end
	if c.note then lines[#lines + 1] = "      (" .. c.note .. ")" end
end

local function counts(list)
	local n = { create = 0, update = 0, delete = 0 }
	for _, c in ipairs(list) do n[c.action] = n[c.action] + 1 end
	return n
end

local function other_lines(lines)
	for _, l in ipairs(left_alone) do
		lines[#lines + 1] = "  left alone: " .. l.provider .. " " ..
		    l.target .. " webhook " .. tostring(l.id) .. " " ..
		    tostring(l.url) .. " (" .. l.reason .. ")"
	end
	for _, n in ipairs(notes) do lines[#lines + 1] = "  note: " .. n end
end

local function plan_text()
	local lines = {}
	for _, c in ipairs(changes) do change_lines(c, lines) end
	other_lines(lines)
	local n = counts(changes)
	if #changes == 0 then
		lines[#lines + 1] = "No changes: the providers point at " ..
		    public .. " as the config says."
	else
		lines[#lines + 1] = string.format("Plan: %d to create, %d to " ..
		    "update, %d to delete.", n.create, n.update, n.delete)
	end
	return table.concat(lines, "\n")
end

local function plan_json()
	local list = {}
	for i, c in ipairs(changes) do list[i] = public_change(c) end
	return { changes = json.array(list), left_alone = array(left_alone),
	    notes = array(notes), summary = counts(changes) }
end

-- Verify: a simulated delivery per endpoint ----------------------------------
--
-- Neither Insider One's nor Kapso's API, as walua uses them, has a "send a
-- test event" call, so this is the next best proof: a correctly signed
-- delivery to the public URL, as the provider would make it, answered 200
-- by walua (committed to its inbox).  It shows that public_url reaches
-- this walua and that the endpoint takes the credentials the provider was
-- given; a handler sees it as a "sent" status of a made-up message
-- ("wamid.SIM...").
local function verify()
	local out, seen, all_ok = {}, {}, true
	local targets = {}
	for _, e in ipairs(setup.insider or {}) do targets[#targets + 1] = e end
	for _, e in ipairs(setup.kapso or {}) do targets[#targets + 1] = e end
	for _, e in ipairs(targets) do
		if not seen[e.endpoint] then
			seen[e.endpoint] = true
			local ep = endpoint(e.endpoint)
			local url = public .. e.endpoint
			local r, err = simulate.deliver{ url = url, endpoint = ep,
			    provider = ep.provider, type = "status",
			    token_url = public .. (oauth2.path or "/oauth/token") }
			local v = { provider = ep.provider, endpoint = e.endpoint,
			    url = url }
			if r then
				v.status, v.auth = r.status, r.auth
				v.answer = r.json or r.body
				v.received = r.status == 200
			else
				v.received, v.error = false, err
			end
			all_ok = all_ok and v.received
			out[#out + 1] = v
		end
	end
	return json.array(out), all_ok
end

local function verify_lines(results, lines)
	for _, v in ipairs(results) do
		local how = v.received and "walua took it" or "NOT received"
		local detail = v.error or (tostring(v.status) .. " " ..
		    (type(v.answer) == "table" and json.encode(v.answer) or
		    tostring(v.answer)))
		lines[#lines + 1] = "verify " .. v.provider .. " " .. v.url ..
		    ": " .. how .. " (" .. detail .. ")"
	end
end

-- Apply --------------------------------------------------------------------

local function err_table(err)
	if type(err) == "table" then
		return { status = err.status, code = err.code,
		    message = err.message or tostring(err) }
	end
	return { message = tostring(err) }
end

local function apply()
	local done, failed, not_done = {}, nil, {}
	for _, c in ipairs(changes) do
		if failed then
			not_done[#not_done + 1] = c
		else
			local res, err = c.run()
			if res == nil then
				failed = { change = c, error = err_table(err) }
			else
				if c.action == "create" and res ~= true then
					c.id = res
				end
				done[#done + 1] = c
			end
		end
	end
	return done, failed, not_done
end

local function apply_output(done, failed, not_done, results)
	local lines = {}
	for _, c in ipairs(done) do lines[#lines + 1] = "done: " .. title(c) end
	if failed then
		local e = failed.error
		lines[#lines + 1] = "FAILED: " .. title(failed.change) .. ": " ..
		    tostring(e.message) .. (e.code and (" (code " .. e.code ..
		    ")") or "") .. (e.status and (" [HTTP " .. e.status .. "]")
		    or "")
	end
	for _, c in ipairs(not_done) do
		lines[#lines + 1] = "not done: " .. title(c)
	end
	other_lines(lines)
	local n = counts(done)
	if failed then
		lines[#lines + 1] = string.format("Apply stopped at the first " ..
		    "error: %d done, 1 failed, %d not done; fix it and run " ..
		    "apply again.", #done, #not_done)
	elseif #done == 0 then
		lines[#lines + 1] = "No changes: the providers point at " ..
		    public .. " as the config says."
	else
		lines[#lines + 1] = string.format("Apply complete: %d created, " ..
		    "%d updated, %d deleted.", n.create, n.update, n.delete)
	end
	if results then verify_lines(results, lines) end
	local function list(t)
		local out = {}
		for i, c in ipairs(t) do out[i] = public_change(c) end
		return json.array(out)
	end
	local j = { done = list(done), not_done = list(not_done),
	    failed = failed and public_change(failed.change,
		{ error = failed.error }) or json.null,
	    left_alone = array(left_alone), notes = array(notes),
	    summary = counts(done), verify = results }
	cli.output(opts, j, table.concat(lines, "\n"))
end

-- Main ---------------------------------------------------------------------

if public == nil then
	fail("public_url is not set in walua's config (the URL the " ..
	    "providers reach walua at)")
end
local ok, err = make_plan()
if not ok then fail(err) end

if cmd == "plan" then
	cli.output(opts, plan_json(), plan_text())
	os.exit(#changes == 0 and 0 or 2)
end

local done, failed, not_done = apply()
local results, verified = nil, true
if opts.verify and not failed then
	results, verified = verify()
end
apply_output(done, failed, not_done, results)
os.exit((failed or not verified) and 1 or 0)
