-- simulate - send walua a correctly authenticated webhook, as the provider
-- would, and print the answer.
--
--   walua run simulate --url http://127.0.0.1:8080/webhooks/insider \
--       --provider insider --type text --text "menu"
--
-- Credentials come from flags (--token, --client-id/--client-secret,
-- --secret, --app-secret) or from walua's config, for the endpoint at
-- --url's path.  For an oauth2 endpoint it first fetches an access token
-- from the daemon's token endpoint (oauth2.path on the same host).  The body
-- is built once and sent as is, so a signature covers the exact bytes.

local http = require "walua.http"
local json = require "walua.json"
local crypto = require "walua.crypto"
local settings = require "walua.settings"

local TYPES = { "text", "button", "interactive", "list", "image", "document",
    "audio", "location", "reaction", "unknown-type", "status", "delivered",
    "read", "failed", "error", "accepted", "template", "conversation",
    "unknown" }

local USAGE = [[
usage: walua run simulate --url URL [--provider insider|kapso|meta]
           [--type TYPE] [options]
  --type T          ]] .. table.concat(TYPES, ", ") .. [[

                    (default text; status = sent)
  --text S          the message text (default "hello")
  --from N          the user's number (default 15551234567)
  --phone-number-id N   the business number's id (default 106540352242922)
  --message-id ID   (default: a new random wamid)
  --token T         bearer token of a bearer endpoint
  --client-id ID --client-secret S   an oauth2 endpoint's client
  --secret S        a kapso endpoint's secret
  --app-secret S    a meta endpoint's app secret
  --json            print the answer as JSON
Without credential flags, they come from walua's config (-c FILE) for the
endpoint whose path is --url's path.  Exit status 0 on a 200.]]

local function die(msg, code)
	io.stderr:write("walua run simulate: ", msg, "\n")
	os.exit(code or 1)
end

local opts = { type = "text", text = "hello", from = "15551234567",
    ["phone-number-id"] = "106540352242922" }
local flags = { json = true, help = true }
local args = { ... }
local i = 1
while i <= #args do
	local a = args[i]
	local name = a:match("^%-%-(.+)$")
	if a == "-h" or name == "help" then
		print(USAGE)
		os.exit(0)
	elseif not name then
		die("unexpected argument '" .. a .. "'\n" .. USAGE, 2)
	elseif flags[name] then
		opts[name] = true
	else
		i = i + 1
		if args[i] == nil then die("--" .. name .. " needs a value", 2) end
		opts[name] = args[i]
	end
	i = i + 1
end
if not opts.url then die("--url is required\n" .. USAGE, 2) end

local scheme_host, path = opts.url:match("^(https?://[^/]+)(/.*)$")
if not scheme_host then die("--url must be http(s)://host[:port]/path") end
local endpoint
for _, ep in ipairs(settings.endpoints or {}) do
	if ep.path == path then endpoint = ep end
end
local provider = opts.provider or (endpoint and endpoint.provider) or
    "insider"
local known = false
for _, t in ipairs(TYPES) do known = known or t == opts.type end
if not known then die("unknown --type '" .. opts.type .. "'\n" .. USAGE, 2) end

-- Show a secret by its first characters only.
local function mask(s)
	if type(s) ~= "string" then return s end
	if #s <= 4 then return "****" end
	return s:sub(1, 3) .. string.rep("*", 8)
end

local now = os.time()
local wamid = opts["message-id"] or ("wamid.SIM" .. crypto.random_hex(12))
local pnid = opts["phone-number-id"]
local from = opts.from

-- Meta's message object for the type.
local function message()
	local m = { from = from, id = wamid, timestamp = tostring(now) }
	local t = opts.type
	if t == "text" then
		m.type, m.text = "text", { body = opts.text }
	elseif t == "button" then
		m.type = "button"
		m.button = { payload = opts.text:upper(), text = opts.text }
		m.context = { from = "15550001111", id = "wamid.SIMCTX" }
	elseif t == "interactive" then
		m.type = "interactive"
		m.interactive = { type = "button_reply",
		    button_reply = { id = opts.text:upper(), title = opts.text } }
	elseif t == "list" then
		m.type = "interactive"
		m.interactive = { type = "list_reply",
		    list_reply = { id = opts.text:upper(), title = opts.text } }
	elseif t == "image" or t == "document" or t == "audio" then
		m.type = t
		m[t] = { id = "1908647269898587", mime_type = t == "image" and
		    "image/jpeg" or t == "audio" and "audio/ogg" or
		    "application/pdf", sha256 = crypto.sha256(wamid),
		    caption = t ~= "audio" and opts.text or nil,
		    filename = t == "document" and "doc.pdf" or nil }
	elseif t == "location" then
		m.type = "location"
		m.location = { latitude = 41.0082, longitude = 28.9784,
		    name = opts.text }
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

local function status_object()
	local st = opts.type == "status" and "sent" or opts.type
	local s = { id = wamid, status = st, timestamp = tostring(now),
	    recipient_id = from }
	if st == "failed" then
		s.errors = json.array({ { code = 131047,
		    title = "Re-engagement message",
		    message = "Re-engagement message",
		    error_data = { details = "Message failed to send because " ..
			"more than 24 hours have passed since the customer " ..
			"last replied to this number." } } })
	end
	return s
end

local is_status = { status = true, delivered = true, read = true,
    failed = true }

-- The body, by provider and type.
local function meta_envelope(value)
	value.messaging_product = "whatsapp"
	value.metadata = { display_phone_number = "15550001111",
	    phone_number_id = pnid }
	return { object = "whatsapp_business_account",
	    entry = json.array({ { id = "102290129340398",
		changes = json.array({ { field = "messages", value = value } }) } }) }
end

local function envelope_body()
	local t = opts.type
	if is_status[t] then
		return meta_envelope({ statuses = json.array({ status_object() }) })
	elseif t == "error" then
		return meta_envelope({ errors = json.array({ { code = 130429,
		    title = "Rate limit hit", message = "Rate limit hit",
		    error_data = { details = "Message failed to send because " ..
			"there were too many messages sent from this phone " ..
			"number in a short period of time" } } }) })
	elseif t == "unknown" then
		return { simulated = true, note = opts.text }
	end
	return meta_envelope({ contacts = json.array({ { profile =
	    { name = "Simulated User" }, wa_id = from } }),
	    messages = json.array({ message() }) })
end

local key = "whatsapp-" .. crypto.random_hex(16)

local function insider_body()
	local t = opts.type
	if t == "error" then
		return { error = { message = "(#130429) Rate limit hit",
		    type = "OAuthException", code = 130429, error_data = {
			messaging_product = "whatsapp",
			details = "Cloud API message throughput reached." },
		    fbtrace_id = "A" .. crypto.random_hex(8) }, key = key }
	elseif t == "accepted" then
		return { messaging_product = "whatsapp",
		    contacts = json.array({ { input = "+" .. from, wa_id = from } }),
		    messages = json.array({ { id = wamid } }), key = key }
	elseif t == "template" then
		return { messaging_product = "whatsapp",
		    recipient_type = "individual", to = from, type = "template",
		    timestamp = tostring(now), key = key,
		    template = { name = "order_update", language = { code = "en",
			policy = "deterministic" }, content = opts.text,
			components = json.array({}) } }
	end
	local b = envelope_body()
	if b.object then b.key = key end
	return b
end

local kapso_events = { text = "whatsapp.message.received",
    status = "whatsapp.message.sent", delivered = "whatsapp.message.delivered",
    read = "whatsapp.message.read", failed = "whatsapp.message.failed",
    conversation = "whatsapp.conversation.ended",
    unknown = "whatsapp.phone_number.created" }

local function kapso_body()
	local t = opts.type
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
	local m = message()
	m.from = nil
	if is_status[t] then
		local st = status_object()
		m = { id = wamid, timestamp = tostring(now), type = "text",
		    text = { body = opts.text }, kapso = { direction = "outbound",
			status = st.status, statuses = json.array({ st }) } }
		return { message = m, conversation = conv, phone_number_id = pnid },
		    kapso_events[t]
	end
	m.kapso = { direction = "inbound", status = "received",
	    processing_status = "pending", origin = "cloud_api",
	    has_media = m.image ~= nil or m.document ~= nil or m.audio ~= nil }
	return { message = m, conversation = conv, is_new_conversation = false,
	    phone_number_id = pnid }, "whatsapp.message.received"
end

-- What each provider sends: Kapso has no error, accepted or template
-- event; only Insider forwards accepted and template; only Kapso has
-- conversation events.
local unsupported = {
	kapso = { error = true, accepted = true, template = true },
	meta = { accepted = true, template = true, conversation = true },
	insider = { conversation = true },
}
if unsupported[provider] and unsupported[provider][opts.type] then
	die(provider .. " sends no '" .. opts.type .. "' event", 2)
end

local body, event_name
if provider == "kapso" then
	body, event_name = kapso_body()
elseif provider == "meta" then
	body = envelope_body()
elseif provider == "insider" then
	body = insider_body()
else
	die("--provider must be insider, kapso or meta", 2)
end
local raw = json.encode(body)

-- Authentication, from flags or the config.
local auth = endpoint and endpoint.auth or {}
local kind = (opts.token and "bearer") or (opts["client-id"] and "oauth2") or
    (opts.secret and "kapso") or (opts["app-secret"] and "meta") or auth.type
local headers = { ["Content-Type"] = "application/json" }
local shown = {}
if kind == "bearer" then
	local tok = opts.token or auth.token
	if not tok then die("no bearer token: give --token") end
	headers.Authorization = "Bearer " .. tok
	shown.auth = "bearer " .. mask(tok)
elseif kind == "oauth2" then
	local o = settings.oauth2 or {}
	local client = (o.clients or {})[1] or {}
	local id = opts["client-id"] or client.id
	local secret = opts["client-secret"] or client.secret
	if not id or not secret then
		die("no OAuth2 client: give --client-id and --client-secret")
	end
	local form = http.urlencode
	local tres, err = http.request{ method = "POST",
	    url = scheme_host .. (o.path or "/oauth/token"),
	    headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
	    body = "grant_type=client_credentials&client_id=" .. form(id) ..
		"&client_secret=" .. form(secret) }
	if not tres then die("token request failed: " .. tostring(err)) end
	if tres.status ~= 200 or type(tres.json) ~= "table" then
		die("token request answered " .. tres.status .. ": " .. tres.body)
	end
	headers.Authorization = "Bearer " .. tres.json.access_token
	shown.auth = "oauth2 client " .. id .. ", token " ..
	    mask(tres.json.access_token)
elseif kind == "kapso" then
	local secret = opts.secret or auth.secret
	if not secret then die("no Kapso secret: give --secret") end
	headers["X-Webhook-Signature"] = crypto.hmac_sha256(secret, raw)
	headers["X-Webhook-Event"] = event_name
	headers["X-Idempotency-Key"] = crypto.random_hex(16)
	headers["X-Webhook-Payload-Version"] = "v2"
	shown.auth = "kapso signature with secret " .. mask(secret)
elseif kind == "meta" then
	local secret = opts["app-secret"] or auth.app_secret
	if not secret then die("no Meta app secret: give --app-secret") end
	headers["X-Hub-Signature-256"] = "sha256=" ..
	    crypto.hmac_sha256(secret, raw)
	shown.auth = "meta signature with app secret " .. mask(secret)
else
	die("no credentials for " .. path .. ": give --token, --client-id/" ..
	    "--client-secret, --secret or --app-secret, or -c with walua's " ..
	    "config")
end

local res, err = http.request{ method = "POST", url = opts.url,
    headers = headers, body = raw }
if not res then die("no answer from " .. opts.url .. ": " .. tostring(err)) end
if opts.json then
	print(json.encode({ status = res.status, answer = res.json or res.body,
	    provider = provider, type = opts.type, event = event_name,
	    message_id = wamid, auth = shown.auth }))
else
	print(string.format("%s %s (%s, %s) -> %d %s", "POST", opts.url,
	    provider, opts.type, res.status, res.body))
	print("auth: " .. shown.auth)
	print("message id: " .. wamid)
end
os.exit(res.status == 200 and 0 or 1)
