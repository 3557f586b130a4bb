-- walua/insider.lua - Insider One's WhatsApp APIs (v1 and the v2 gateway).
--
--   insider.settings_v1{ is_active, webhook_url, api_key }      v1, x-ins-auth-key
--   insider.settings{ webhook_url, from, auth_type, api_key | oauth2 = {...} }
--   insider.webhooks.list(phone) -> records
--   insider.webhooks.create(phone, spec) -> id
--   insider.webhooks.update(phone, id, spec) -> id
--   insider.webhooks.delete(phone, id) -> true
--   insider.send{ from, to, text | message, api = "v1"|"v2" } -> tracking key
--
-- Lua sees snake_case both ways; each API's own casing is written here
-- (camelCase for the v2 webhook bodies, snake_case for v2 settings and the
-- gateway token).  What the provider documents is checked before anything
-- is sent, and every failure is nil, err with err.status (HTTP), err.code
-- (Insider's errorCode or error.code) and err.message.  The v2 calls use
-- one gateway token per process, asked for with insider.scopes, cached
-- until a minute before it expires and renewed once on a 401.  A 429 is
-- retried once after its Retry-After, if the caller's budget allows.
-- Configuration: the `insider` table of walua's config (the admin scripts
-- also read WALUA_INSIDER_API_URL, WALUA_INSIDER_GATEWAY_URL,
-- INSIDER_AUTH_KEY, INSIDER_CLIENT_ID, INSIDER_CLIENT_SECRET).

local http = require "walua.http"
local httpc = require "walua.httpc"
local json = require "walua.json"
local settings = require "walua.settings"

local M = { webhooks = {} }

local function conf()
	return settings.insider or {}
end

local function fail(msg, status, code)
	return http.error(status, code, msg)
end

local function trim_slash(u)
	return (u:gsub("/+$", ""))
end

-- An error answer from Insider, as nil, err.
local function provider_error(res)
	local j = type(res.json) == "table" and res.json or {}
	local e = type(j.error) == "table" and j.error or {}
	local code = j.errorCode or e.code or j.code
	local msg = j.message or e.message or (type(j.error) == "string" and
	    j.error) or j.detail
	if code ~= nil then code = tostring(math.tointeger(code) or code) end
	if msg == nil then
		msg = res.body ~= "" and res.body:sub(1, 300) or
		    ("HTTP " .. res.status)
	end
	return fail(tostring(msg), res.status, code)
end

-- Keys from snake_case to camelCase (to Insider) and back (to Lua).
local function camel(s)
	return (s:gsub("_(%l)", string.upper))
end

local function snake(s)
	return (s:gsub("(%u)", function(c) return "_" .. c:lower() end))
end

local function is_array(t)
	return next(t) == nil or t[1] ~= nil
end

local function rekey(v, f)
	if type(v) ~= "table" then return v end
	local out = {}
	if is_array(v) then
		for i, x in ipairs(v) do out[i] = rekey(x, f) end
		return next(out) == nil and json.array(out) or out
	end
	for k, x in pairs(v) do
		out[type(k) == "string" and f(k) or k] = rekey(x, f)
	end
	return out
end

local function copy_list(t)
	local out = {}
	for i, v in ipairs(t or {}) do out[i] = v end
	return json.array(out)
end

-- Digits only, as the v2 webhooks API wants phoneNumber.
local function digits(phone)
	if type(phone) ~= "string" and type(phone) ~= "number" then
		return nil
	end
	local d = tostring(phone):gsub("[%s%+%-%(%)]", "")
	if not d:match("^%d+$") then return nil end
	return d
end

local urlencode = http.urlencode

-- One request; on a 429, wait Retry-After once if the budget allows.
local function call(opts)
	opts.api = "insider"
	local res, err = http.request(opts)
	if res and res.status == 429 then
		local wait = tonumber(res.headers["retry-after"] or "") or 1
		if wait <= 30 and httpc.sleep(math.floor(wait * 1000)) then
			res, err = http.request(opts)
		end
	end
	return res, err
end

-- The gateway token (v2), cached per process.
local token, token_expires

local function gateway_token(renew)
	local c = conf()
	if not renew and token and os.time() < token_expires - 60 then
		return token
	end
	token = nil
	if not c.client_id or not c.client_secret then
		return fail("insider.client_id and insider.client_secret are " ..
		    "not configured (needed for the v2 APIs)")
	end
	local res, err = call{ method = "POST",
	    url = trim_slash(c.gateway_url) .. "/auth/token",
	    json = { client_id = c.client_id, client_secret = c.client_secret,
		scopes = copy_list(c.scopes) } }
	if not res then return nil, err end
	if res.status ~= 200 then return provider_error(res) end
	local j = type(res.json) == "table" and res.json or {}
	local t = j.access_token or j.accessToken or j.token
	if type(t) ~= "string" or t == "" then
		return fail("the gateway's token answer has no access_token",
		    res.status)
	end
	token = t
	token_expires = os.time() + (tonumber(j.expires_in or j.expiresIn) or
	    3600)
	return token
end

-- A call to the gateway with the token; a 401 renews it once.
local function gateway(method, path, body)
	local c = conf()
	for attempt = 1, 2 do
		local t, err = gateway_token(attempt == 2)
		if not t then return nil, err end
		local res
		res, err = call{ method = method,
		    url = trim_slash(c.gateway_url) .. path,
		    headers = { Authorization = "Bearer " .. t,
			["Content-Type"] = "application/json" },
		    body = body and json.encode(body) or nil }
		if not res then return nil, err end
		if res.status ~= 401 or attempt == 2 then
			if res.status < 200 or res.status > 299 then
				return provider_error(res)
			end
			return res
		end
	end
end

-- A call to a v1 host with the auth key.
local function v1(path, body)
	local c = conf()
	if not c.auth_key then
		return fail("insider.auth_key is not configured (needed for " ..
		    "the v1 APIs)")
	end
	local res, err = call{ method = "POST",
	    url = trim_slash(c.api_url) .. path,
	    headers = { ["x-ins-auth-key"] = c.auth_key },
	    json = body }
	if not res then return nil, err end
	if res.status < 200 or res.status > 299 then
		return provider_error(res)
	end
	return res
end

-- Validation --------------------------------------------------------------

local function check_keys(t, allowed, where)
	for k in pairs(t) do
		if not allowed[k] then
			return "unknown field '" .. where .. tostring(k) .. "'"
		end
	end
end

local function one_of(v, set)
	for _, x in ipairs(set) do
		if v == x then return true end
	end
	return false
end

local function is_url(v)
	return type(v) == "string" and v:match("^https?://[^%s]+$") ~= nil
end

local function masked(v)
	return type(v) == "string" and v:find("%*%*%*%*$") ~= nil
end

-- The oauth2 part of a v2 settings body or webhook spec (snake_case).
local function check_oauth2(o, where)
	if type(o) ~= "table" then
		return where .. " is required with auth_type \"oauth2\""
	end
	local bad = check_keys(o, { grant_type = true, token_url = true,
	    client_id = true, client_secret = true, refresh_token = true,
	    scopes = true, expires_in = true }, where .. ".")
	if bad then return bad end
	if not one_of(o.grant_type, { "client_credentials", "refresh_token" })
	    then
		return where .. ".grant_type must be \"client_credentials\" " ..
		    "or \"refresh_token\""
	end
	if not is_url(o.token_url) then
		return where .. ".token_url must be an http(s) URL"
	end
	for _, k in ipairs({ "client_id", "client_secret" }) do
		if type(o[k]) ~= "string" or o[k] == "" then
			return where .. "." .. k .. " is required"
		end
	end
	if masked(o.client_secret) then
		return where .. ".client_secret looks masked (as a list shows " ..
		    "it): give the real secret"
	end
	if o.grant_type == "refresh_token" and (type(o.refresh_token) ~=
	    "string" or o.refresh_token == "") then
		return where .. ".refresh_token is required with grant_type " ..
		    "\"refresh_token\""
	end
	if math.type(o.expires_in) ~= "integer" or o.expires_in <= 0 then
		return where .. ".expires_in must be an integer > 0"
	end
	if o.scopes ~= nil and type(o.scopes) ~= "table" then
		return where .. ".scopes must be a list"
	end
end

local EVENTS = { "sent", "delivered", "read", "reply", "failed" }

local function check_webhook(spec, create)
	if type(spec) ~= "table" then return "spec must be a table" end
	local bad = check_keys(spec, { sub_product = create, webhook_url = true,
	    events = true, auth_type = true, oauth2 = true,
	    is_active = true }, "")
	if bad then
		if not create and spec.sub_product ~= nil then
			return "sub_product cannot be changed on update"
		end
		return bad
	end
	if (spec.auth_type or "oauth2") ~= "oauth2" then
		return "auth_type must be \"oauth2\" (the v2 API only takes " ..
		    "OAuth2 webhooks; use settings_v1 for a bearer token)"
	end
	if create and not one_of(spec.sub_product, { "transactional",
	    "conversational" }) then
		return "sub_product must be \"transactional\" or \"conversational\""
	end
	if not is_url(spec.webhook_url) then
		return "webhook_url must be an http(s) URL"
	end
	if type(spec.events) ~= "table" or #spec.events == 0 then
		return "events must be a non-empty list"
	end
	local has_reply = false
	for _, e in ipairs(spec.events) do
		if not one_of(e, EVENTS) then
			return "events: unknown event '" .. tostring(e) ..
			    "' (sent, delivered, read, reply, failed)"
		end
		if e == "reply" then has_reply = true end
	end
	if create and spec.sub_product == "conversational" and not has_reply then
		return "events: a conversational webhook must include \"reply\""
	end
	return check_oauth2(spec.oauth2, "oauth2")
end

local function webhook_body(spec)
	local body = rekey(spec, camel)
	body.authType = spec.auth_type or "oauth2"
	body.events = copy_list(spec.events)
	if body.oauth2 and spec.oauth2.scopes then
		body.oauth2.scopes = copy_list(spec.oauth2.scopes)
	end
	return body
end

local function phone_query(phone)
	local d = digits(phone)
	if not d then
		return nil, "phone must be the sender's number (digits, " ..
		    "e.g. 15551234567)"
	end
	return "?phoneNumber=" .. urlencode(d)
end

-- A webhook's id: a number, or a string of digits.
local function webhook_id(id)
	return math.tointeger(id) ~= nil or (type(id) == "string" and
	    id:match("^%d+$") ~= nil)
end

-- The API -----------------------------------------------------------------

function M.settings_v1(t)
	if type(t) ~= "table" then
		error("insider.settings_v1: expected a table", 2)
	end
	local bad = check_keys(t, { is_active = true, webhook_url = true,
	    api_key = true }, "")
	if bad then return fail(bad) end
	if type(t.is_active) ~= "boolean" then
		return fail("is_active must be true or false")
	end
	if not is_url(t.webhook_url) then
		return fail("webhook_url must be an http(s) URL")
	end
	if type(t.api_key) ~= "string" or t.api_key == "" then
		return fail("api_key (your webhook's bearer token) is required")
	end
	local res, err = v1("/v1/conversational/settings/update", {
	    isActive = t.is_active, webhookUrl = t.webhook_url,
	    apiKey = t.api_key })
	if not res then return nil, err end
	return res.json or true
end

function M.settings(t)
	if type(t) ~= "table" then error("insider.settings: expected a table", 2) end
	local bad = check_keys(t, { webhook_url = true, from = true,
	    auth_type = true, api_key = true, oauth2 = true }, "")
	if bad then return fail(bad) end
	if not is_url(t.webhook_url) then
		return fail("webhook_url must be an http(s) URL")
	end
	if t.from ~= nil and (type(t.from) ~= "string" or
	    not t.from:match("^%+%d+$")) then
		return fail("from must be an E.164 number with '+'")
	end
	if t.auth_type == "bearer" then
		if type(t.api_key) ~= "string" or t.api_key == "" then
			return fail("api_key is required with auth_type \"bearer\"")
		end
		if t.oauth2 ~= nil then
			return fail("oauth2 goes with auth_type \"oauth2\" only")
		end
	elseif t.auth_type == "oauth2" then
		bad = check_oauth2(t.oauth2, "oauth2")
		if bad then return fail(bad) end
	else
		return fail("auth_type must be \"bearer\" or \"oauth2\"")
	end
	local body = rekey(t, function(k) return k end)
	if body.oauth2 and t.oauth2.scopes then
		body.oauth2.scopes = copy_list(t.oauth2.scopes)
	end
	local res, err = gateway("POST", "/api/wa/v2/conversational/settings",
	    body)
	if not res then return nil, err end
	return res.json or true
end

function M.webhooks.list(phone)
	local q, bad = phone_query(phone)
	if not q then return fail(bad) end
	local res, err = gateway("GET", "/api/wa/v2/webhooks" .. q)
	if not res then return nil, err end
	local j = type(res.json) == "table" and res.json or {}
	return rekey(j.webhooks or {}, snake)
end

function M.webhooks.create(phone, spec)
	local q, bad = phone_query(phone)
	if not q then return fail(bad) end
	bad = check_webhook(spec, true)
	if bad then return fail(bad) end
	local res, err = gateway("POST", "/api/wa/v2/webhooks" .. q,
	    webhook_body(spec))
	if not res then return nil, err end
	local j = type(res.json) == "table" and res.json or {}
	return j.webhook or j.id or true
end

function M.webhooks.update(phone, id, spec)
	local q, bad = phone_query(phone)
	if not q then return fail(bad) end
	if not webhook_id(id) then
		return fail("id must be the webhook's number")
	end
	bad = check_webhook(spec, false)
	if bad then return fail(bad) end
	local res, err = gateway("PUT", "/api/wa/v2/webhooks/" ..
	    urlencode(id) .. q, webhook_body(spec))
	if not res then return nil, err end
	local j = type(res.json) == "table" and res.json or {}
	return j.webhook or math.tointeger(id) or id
end

function M.webhooks.delete(phone, id)
	local q, bad = phone_query(phone)
	if not q then return fail(bad) end
	if not webhook_id(id) then
		return fail("id must be the webhook's number")
	end
	local res, err = gateway("DELETE", "/api/wa/v2/webhooks/" ..
	    urlencode(id) .. q)
	if not res then return nil, err end
	return true
end

function M.send(t)
	if type(t) ~= "table" then error("insider.send: expected a table", 2) end
	local bad = check_keys(t, { from = true, to = true, text = true,
	    message = true, api = true }, "")
	if bad then return fail(bad) end
	local to = digits(t.to)
	if not to then return fail("to must be the user's phone number") end
	if (t.text == nil) == (t.message == nil) then
		return fail("give text or message (one of them)")
	end
	if t.text ~= nil and type(t.text) ~= "string" then
		return fail("text must be a string")
	end
	if t.message ~= nil and (type(t.message) ~= "table" or
	    type(t.message.type) ~= "string") then
		return fail("message must be a table with a type (Meta's " ..
		    "message object)")
	end
	local from = t.from
	if from ~= nil then
		from = digits(from)
		if not from then return fail("from must be a phone number") end
		from = "+" .. from
	end
	local message = t.message or { type = "text", text = { body = t.text } }
	local c = conf()
	local api = t.api or ((c.client_id and c.client_secret) and "v2" or "v1")
	local res, err
	if api == "v2" then
		res, err = gateway("POST", "/api/wa/v2/conversational/messages/send",
		    { from = from, messages = { { phone_number = "+" .. to,
			message = message } } })
	elseif api == "v1" then
		res, err = v1("/v1/conversational/send", { from = from,
		    messages = { { phoneNumber = "+" .. to, message = message } } })
	else
		return fail("api must be \"v1\" or \"v2\"")
	end
	if not res then return nil, err end
	local j = type(res.json) == "table" and res.json or {}
	local key = type(j.keys) == "table" and j.keys[1] or nil
	if type(key) ~= "string" then
		return fail("the answer has no tracking key", res.status)
	end
	return key
end

-- For tests and admin scripts: forget the cached gateway token.
function M.forget_token()
	token = nil
end

return M
