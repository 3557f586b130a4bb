-- walua/simulate.lua - build a delivery as a provider would, authenticate
-- it for a walua endpoint, post it and return the answer.  Shared by the
-- admin scripts simulate and setup (apply --verify).
--
--   local simulate = require "walua.simulate"
--   local r, err, code = simulate.deliver{ url = URL,
--       provider = "insider"|"kapso"|"meta", type = "text", text = "hello",
--       from = N, phone_number_id = N, message_id = ID,
--       endpoint = { provider, auth },   -- else the config's, by URL path
--       token = T | client_id = ID, client_secret = S [, token_url = URL]
--       | secret = S | app_secret = S }
--   r = { status, body, json, provider, type, event, message_id, auth }
--
-- Credentials given win over the endpoint's (from walua's config); for an
-- oauth2 endpoint an access token is first fetched from walua's token
-- endpoint (token_url, else oauth2.path on the URL's host).  The body is
-- built once and sent as is, so a signature covers the exact bytes.  r.auth
-- says how it was authenticated, secrets masked.  On failure: nil, a
-- message, and 2 for a bad request (unknown type, an event the provider
-- never sends) or 1 for the rest.

local http = require "walua.http"
local json = require "walua.json"
local crypto = require "walua.crypto"
local settings = require "walua.settings"

local M = {}

M.TYPES = { "text", "button", "interactive", "list", "image", "document",
    "audio", "location", "reaction", "unknown-type", "status", "delivered",
    "read", "failed", "error", "accepted", "template", "conversation",
    "unknown" }

-- Show a secret by its first characters only.
local function mask(s)
	if type(s) ~= "string" then return s end
	if #s <= 4 then return "****" end
	return s:sub(1, 3) .. string.rep("*", 8)
end

local is_status = { status = true, delivered = true, read = true,
    failed = true }

-- The bodies of one delivery: o is deliver's table with its defaults.
local function builder(o)
	local B = {}
	local now = os.time()
	local wamid = o.message_id
	local pnid = o.phone_number_id
	local from = o.from

	-- Meta's message object for the type.
	function B.message()
		local m = { from = from, id = wamid, timestamp = tostring(now) }
		local t = o.type
		if t == "text" then
			m.type, m.text = "text", { body = o.text }
		elseif t == "button" then
			m.type = "button"
			m.button = { payload = o.text:upper(), text = o.text }
			m.context = { from = "15550001111", id = "wamid.SIMCTX" }
		elseif t == "interactive" then
			m.type = "interactive"
			m.interactive = { type = "button_reply",
			    button_reply = { id = o.text:upper(), title = o.text } }
		elseif t == "list" then
			m.type = "interactive"
			m.interactive = { type = "list_reply",
			    list_reply = { id = o.text:upper(), title = o.text } }
		elseif t == "image" or t == "document" or t == "audio" then
			m.type = t
			m[t] = { id = "1908647269898587", mime_type = t == "image" and
			    "image/jpeg" or t == "audio" and "audio/ogg" or
			    "application/pdf", sha256 = crypto.sha256(wamid),
			    caption = t ~= "audio" and o.text or nil,
			    filename = t == "document" and "doc.pdf" or nil }
		elseif t == "location" then
			m.type = "location"
			m.location = { latitude = 41.0082, longitude = 28.9784,
			    name = o.text }
		elseif t == "reaction" then
			m.type = "reaction"
			m.reaction = { message_id = "wamid.SIMCTX", emoji = "👍" }
		elseif t == "unknown-type" then
			m.type = "unknown"
			m.errors = json.array({ { code = 131051,
			    title = "Message type unknown" } })
		end
		return m
	end

	function B.status_object()
		local st = o.type == "status" and "sent" or o.type
		local s = { id = wamid, status = st, timestamp = tostring(now),
		    recipient_id = from }
		if st == "failed" then
			s.errors = json.array({ { code = 131047,
			    title = "Re-engagement message",
			    message = "Re-engagement message",
			    error_data = { details = "Message failed to send " ..
				"because more than 24 hours have passed since " ..
				"the customer last replied to this number." } } })
		end
		return s
	end

	local function meta_envelope(value)
		value.messaging_product = "whatsapp"
		value.metadata = { display_phone_number = "15550001111",
		    phone_number_id = pnid }
		return { object = "whatsapp_business_account",
		    entry = json.array({ { id = "102290129340398",
			changes = json.array({ { field = "messages",
			    value = value } }) } }) }
	end

	function B.envelope()
		local t = o.type
		if is_status[t] then
			return meta_envelope({ statuses =
			    json.array({ B.status_object() }) })
		elseif t == "error" then
			return meta_envelope({ errors = json.array({ { code = 130429,
			    title = "Rate limit hit", message = "Rate limit hit",
			    error_data = { details = "Message failed to send " ..
				"because there were too many messages sent from " ..
				"this phone number in a short period of time" } } }) })
		elseif t == "unknown" then
			return { simulated = true, note = o.text }
		end
		return meta_envelope({ contacts = json.array({ { profile =
		    { name = "Simulated User" }, wa_id = from } }),
		    messages = json.array({ B.message() }) })
	end

	local key = "whatsapp-" .. crypto.random_hex(16)

	function B.insider()
		local t = o.type
		if t == "error" then
			return { error = { message = "(#130429) Rate limit hit",
			    type = "OAuthException", code = 130429, error_data = {
				messaging_product = "whatsapp",
				details = "Cloud API message throughput reached." },
			    fbtrace_id = "A" .. crypto.random_hex(8) }, key = key }
		elseif t == "accepted" then
			return { messaging_product = "whatsapp",
			    contacts = json.array({ { input = "+" .. from,
				wa_id = from } }),
			    messages = json.array({ { id = wamid } }), key = key }
		elseif t == "template" then
			return { messaging_product = "whatsapp",
			    recipient_type = "individual", to = from,
			    type = "template", timestamp = tostring(now), key = key,
			    template = { name = "order_update", language = {
				code = "en", policy = "deterministic" },
				content = o.text, components = json.array({}) } }
		end
		local b = B.envelope()
		if b.object then b.key = key end
		return b
	end

	local kapso_events = { text = "whatsapp.message.received",
	    status = "whatsapp.message.sent",
	    delivered = "whatsapp.message.delivered",
	    read = "whatsapp.message.read", failed = "whatsapp.message.failed",
	    conversation = "whatsapp.conversation.ended",
	    unknown = "whatsapp.phone_number.created" }

	function B.kapso()
		local t = o.type
		local conv = { id = "conv_sim_" .. from, phone_number = "+" .. from,
		    status = t == "conversation" and "ended" or "active",
		    phone_number_id = pnid }
		if t == "conversation" then
			return { conversation = conv, phone_number_id = pnid },
			    kapso_events.conversation
		elseif t == "unknown" then
			return { phone_number_id = pnid, project = { id = "proj_sim" } },
			    kapso_events.unknown
		end
		local m = B.message()
		m.from = nil
		if is_status[t] then
			local st = B.status_object()
			m = { id = wamid, timestamp = tostring(now), type = "text",
			    text = { body = o.text }, kapso = {
				direction = "outbound", status = st.status,
				statuses = json.array({ st }) } }
			return { message = m, conversation = conv,
			    phone_number_id = pnid }, kapso_events[t]
		end
		m.kapso = { direction = "inbound", status = "received",
		    processing_status = "pending", origin = "cloud_api",
		    has_media = m.image ~= nil or m.document ~= nil or
			m.audio ~= nil }
		return { message = m, conversation = conv,
		    is_new_conversation = false, phone_number_id = pnid },
		    "whatsapp.message.received"
	end

	return B
end

-- What each provider sends: Kapso has no error, accepted or template
-- event; only Insider forwards accepted and template; only Kapso has
-- conversation events.
local unsupported = {
	kapso = { error = true, accepted = true, template = true },
	meta = { accepted = true, template = true, conversation = true },
	insider = { conversation = true },
}

-- An access token from walua's own token endpoint.
local function oauth2_token(o, url, scheme_host)
	local conf = settings.oauth2 or {}
	local client = (conf.clients or {})[1] or {}
	local id = o.client_id or client.id
	local secret = o.client_secret or client.secret
	if not id or not secret then
		return nil, "no OAuth2 client: give --client-id and --client-secret"
	end
	local form = http.urlencode
	local tres, err = http.request{ method = "POST",
	    url = o.token_url or (scheme_host .. (conf.path or "/oauth/token")),
	    headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
	    body = "grant_type=client_credentials&client_id=" .. form(id) ..
		"&client_secret=" .. form(secret) }
	if not tres then return nil, "token request failed: " .. tostring(err) end
	if tres.status ~= 200 or type(tres.json) ~= "table" or
	    type(tres.json.access_token) ~= "string" then
		return nil, "token request answered " .. tres.status .. ": " ..
		    tres.body
	end
	return tres.json.access_token, "oauth2 client " .. id .. ", token " ..
	    mask(tres.json.access_token)
end

-- The authentication headers for raw, and how it is shown.
local function authenticate(o, endpoint, raw, event_name, scheme_host, path)
	local auth = endpoint and endpoint.auth or {}
	local kind = (o.token and "bearer") or (o.client_id and "oauth2") or
	    (o.secret and "kapso") or (o.app_secret and "meta") or auth.type
	local headers = { ["Content-Type"] = "application/json" }
	if kind == "bearer" then
		local tok = o.token or auth.token
		if not tok then return nil, "no bearer token: give --token" end
		headers.Authorization = "Bearer " .. tok
		return headers, "bearer " .. mask(tok)
	elseif kind == "oauth2" then
		local tok, shown = oauth2_token(o, o.url, scheme_host)
		if not tok then return nil, shown end
		headers.Authorization = "Bearer " .. tok
		return headers, shown
	elseif kind == "kapso" then
		local secret = o.secret or auth.secret
		if not secret then return nil, "no Kapso secret: give --secret" end
		headers["X-Webhook-Signature"] = crypto.hmac_sha256(secret, raw)
		headers["X-Webhook-Event"] = event_name
		headers["X-Idempotency-Key"] = crypto.random_hex(16)
		headers["X-Webhook-Payload-Version"] = "v2"
		return headers, "kapso signature with secret " .. mask(secret)
	elseif kind == "meta" then
		local secret = o.app_secret or auth.app_secret
		if not secret then
			return nil, "no Meta app secret: give --app-secret"
		end
		headers["X-Hub-Signature-256"] = "sha256=" ..
		    crypto.hmac_sha256(secret, raw)
		return headers, "meta signature with app secret " .. mask(secret)
	end
	return nil, "no credentials for " .. path .. ": give --token, " ..
	    "--client-id/--client-secret, --secret or --app-secret, or -c " ..
	    "with walua's config"
end

function M.deliver(opts)
	local o = {}
	for k, v in pairs(opts) do o[k] = v end
	o.type = o.type or "text"
	o.text = o.text or "hello"
	o.from = o.from or "15551234567"
	o.phone_number_id = o.phone_number_id or "106540352242922"
	o.message_id = o.message_id or ("wamid.SIM" .. crypto.random_hex(12))
	local scheme_host, path = tostring(o.url):match("^(https?://[^/]+)(/.*)$")
	if not scheme_host then
		return nil, "--url must be http(s)://host[:port]/path", 1
	end
	local endpoint = o.endpoint
	if not endpoint then
		for _, ep in ipairs(settings.endpoints or {}) do
			if ep.path == path then endpoint = ep end
		end
	end
	local provider = o.provider or (endpoint and endpoint.provider) or
	    "insider"
	local known = false
	for _, t in ipairs(M.TYPES) do known = known or t == o.type end
	if not known then return nil, "unknown --type '" .. o.type .. "'", 2 end
	if unsupported[provider] and unsupported[provider][o.type] then
		return nil, provider .. " sends no '" .. o.type .. "' event", 2
	end

	local B = builder(o)
	local body, event_name
	if provider == "kapso" then
		body, event_name = B.kapso()
	elseif provider == "meta" then
		body = B.envelope()
	elseif provider == "insider" then
		body = B.insider()
	else
		return nil, "--provider must be insider, kapso or meta", 2
	end
	local raw = json.encode(body)
	local headers, shown = authenticate(o, endpoint, raw, event_name,
	    scheme_host, path)
	if not headers then return nil, shown, 1 end
	local res, err = http.request{ method = "POST", url = o.url,
	    headers = headers, body = raw }
	if not res then
		return nil, "no answer from " .. o.url .. ": " .. tostring(err), 1
	end
	return { status = res.status, body = res.body, json = res.json,
	    provider = provider, type = o.type, event = event_name,
	    message_id = o.message_id, auth = shown }
end

return M
