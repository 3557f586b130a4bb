-- walua/normalize.lua - turn a provider's webhook body into walua events.
--
-- decode(provider, body, ctx) -> list of events | nil, err
--
-- Runs in the C core's decoder states on the HTTP threads (trusted code, no
-- handler ever runs there) and in tests.  The body is decoded with cjson at
-- the depth limit the C core fixed; every entry, change, message and status
-- becomes its own event, in body order.  The fields are those of the
-- README's Events section; `id` is given by the C core.  Ids stay strings,
-- codes and timestamps become integers, and ev.raw is the provider object
-- the event came from.

local cjson = require "cjson"

local M = {}

local null = cjson.null
local tointeger = math.tointeger
local find, format = string.find, string.format

-- A JSON value as a string id: numbers without a fraction, as integers.
local function idstr(v)
	if type(v) == "string" then return v ~= "" and v or nil end
	if type(v) == "number" then
		local i = tointeger(v)
		return i and format("%d", i) or tostring(v)
	end
	return nil
end

local function str(v)
	if type(v) == "string" then return v end
	return nil
end

local function tab(v)
	if type(v) == "table" then return v end
	return nil
end

local function int(v)
	if type(v) == "number" then return tointeger(v) end
	if type(v) == "string" then
		local n = tonumber(v)
		return n and tointeger(n) or nil
	end
	return nil
end

-- Days from 1970-01-01 to y-m-d (proleptic Gregorian), without os.time,
-- which would apply the local time zone.
local function days_from_civil(y, m, d)
	y = m <= 2 and y - 1 or y
	local era = (y >= 0 and y or y - 399) // 400
	local yoe = y - era * 400
	local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
	local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
	return era * 146097 + doe - 719468
end

-- Unix seconds from a number, a numeric string or an ISO 8601 time
-- ("2025-10-28T14:25:01Z", "+03:00" offsets, fractions ignored).
local function timestamp(v)
	local n = int(v)
	if n then return n end
	if type(v) ~= "string" then return nil end
	local y, mo, d, h, mi, s, rest = v:match(
	    "^(%d%d%d%d)-(%d%d)-(%d%d)[T ](%d%d):(%d%d):(%d%d)(.*)$")
	if not y then return nil end
	local t = days_from_civil(tointeger(y), tointeger(mo), tointeger(d)) *
	    86400 + h * 3600 + mi * 60 + tointeger(s)
	rest = rest:gsub("^%.%d+", "")
	local sign, oh, om = rest:match("^([+-])(%d%d):?(%d%d)$")
	if sign then
		local off = tointeger(oh) * 3600 + tointeger(om) * 60
		t = sign == "+" and t - off or t + off
	elseif rest ~= "Z" and rest ~= "" then
		return nil
	end
	return tointeger(t)
end
M.timestamp = timestamp

-- One normalized error: only the fields present.
local function error_item(e)
	if type(e) ~= "table" then return nil end
	local data = tab(e.error_data)
	return {
		code = int(e.code),
		title = str(e.title),
		message = str(e.message),
		details = str(e.details) or (data and str(data.details)),
		href = str(e.href),
	}
end

local function error_list(list)
	if type(list) ~= "table" then return nil end
	local out = {}
	for _, e in ipairs(list) do
		out[#out + 1] = error_item(e)
	end
	return #out > 0 and out or nil
end

local function conversation(pnid, wa_id)
	if pnid and wa_id then return pnid .. ":" .. wa_id end
	return wa_id
end

local function base(ctx, kind, raw)
	return { provider = ctx.provider, endpoint = ctx.endpoint,
	    kind = kind, key = ctx.key, raw = raw }
end

local media_types = { image = true, video = true, audio = true,
    document = true, sticker = true }
local media_fields = { "id", "mime_type", "sha256", "filename", "caption",
    "url", "animated", "voice" }

local function media(m)
	local out = {}
	for _, f in ipairs(media_fields) do
		local v = m[f]
		if v ~= nil and v ~= null then
			out[f] = (f == "id") and idstr(v) or v
		end
	end
	return out
end

-- The profile name of the contact who sent from, if the value says.
local function contact_name(contacts, from)
	if type(contacts) ~= "table" then return nil end
	local only = #contacts == 1 and tab(contacts[1]) or nil
	for _, c in ipairs(contacts) do
		if type(c) == "table" and idstr(c.wa_id) == from then
			only = c
			break
		end
	end
	local p = only and tab(only.profile)
	return p and str(p.name)
end

-- What a message in Meta's format says (Kapso passes Meta's message on,
-- with extras of its own): its type, id, time and content.
local function message_content(ev, m)
	ev.type = str(m.type) or "unknown"
	ev.message_id = idstr(m.id)
	ev.timestamp = timestamp(m.timestamp)
	local t = ev.type
	local body = tab(m[t])
	if t == "text" then
		ev.text = body and str(body.body)
	elseif t == "button" and body then
		ev.text, ev.reply_id = str(body.text), idstr(body.payload)
	elseif t == "interactive" and body then
		local r = tab(body.button_reply) or tab(body.list_reply)
		if r then ev.text, ev.reply_id = str(r.title), idstr(r.id) end
	elseif media_types[t] and body then
		ev.media = media(body)
		ev.text = str(body.caption)
	elseif t == "location" then
		ev.location = body
	elseif t == "reaction" then
		ev.reaction = body
	end
	local c = tab(m.context)
	if c then ev.context = { from = idstr(c.from), id = idstr(c.id) } end
end

local function message_event(ctx, meta, m, contacts)
	local ev = base(ctx, "message", m)
	ev.phone_number_id, ev.display_phone_number = meta.pnid, meta.display
	message_content(ev, m)
	ev.from = idstr(m.from)
	ev.name = contact_name(contacts, ev.from)
	ev.conversation = conversation(meta.pnid, ev.from)
	ev.errors = error_list(m.errors)
	return ev
end

local function status_event(ctx, meta, s)
	local ev = base(ctx, "status", s)
	ev.phone_number_id, ev.display_phone_number = meta.pnid, meta.display
	ev.status = str(s.status)
	ev.message_id = idstr(s.id)
	ev.recipient = idstr(s.recipient_id)
	ev.timestamp = timestamp(s.timestamp)
	ev.errors = error_list(s.errors)
	ev.pricing = tab(s.pricing)
	ev.conversation = conversation(meta.pnid, ev.recipient)
	return ev
end

local function error_event(ctx, raw, errors)
	local ev = base(ctx, "error", raw)
	ev.errors = errors
	ev.code = errors and errors[1] and errors[1].code
	return ev
end

local function metadata(value)
	local m = tab(value.metadata) or {}
	return { pnid = idstr(m.phone_number_id) or
	    idstr(m.display_phone_number_id),
	    display = idstr(m.display_phone_number) }
end

local function unknown_event(ctx, raw, meta)
	local ev = base(ctx, "unknown", raw)
	if meta then
		ev.phone_number_id, ev.display_phone_number = meta.pnid, meta.display
	end
	return ev
end

-- Meta's envelope: entry[] -> changes[] -> value.
local function envelope(ctx, body, out)
	for _, entry in ipairs(tab(body.entry) or {}) do
		for _, change in ipairs(type(entry) == "table" and
		    tab(entry.changes) or {}) do
			local value = type(change) == "table" and tab(change.value)
			if not value or change.field ~= "messages" then
				out[#out + 1] = unknown_event(ctx, change,
				    value and metadata(value))
			else
				local meta = metadata(value)
				local n = #out
				for _, m in ipairs(tab(value.messages) or {}) do
					if type(m) == "table" then
						out[#out + 1] = message_event(ctx,
						    meta, m, value.contacts)
					end
				end
				for _, s in ipairs(tab(value.statuses) or {}) do
					if type(s) == "table" then
						out[#out + 1] = status_event(ctx,
						    meta, s)
					end
				end
				local errs = error_list(value.errors)
				if errs then
					local ev = error_event(ctx, value, errs)
					ev.phone_number_id = meta.pnid
					ev.display_phone_number = meta.display
					out[#out + 1] = ev
				end
				if #out == n then
					out[#out + 1] = unknown_event(ctx,
					    change, meta)
				end
			end
		end
	end
end

-- (a) Meta's send response forwarded by Insider, plus key.
local function accepted(ctx, body, out)
	local contacts = tab(body.contacts) or {}
	for i, m in ipairs(body.messages) do
		local c = tab(contacts[i]) or tab(contacts[1]) or {}
		local ev = base(ctx, "accepted", body)
		ev.message_id = type(m) == "table" and idstr(m.id) or nil
		ev.recipient = idstr(c.wa_id)
		ev.input = idstr(c.input)
		ev.conversation = ev.recipient
		out[#out + 1] = ev
	end
end

-- (i) the template-sent event.
local function template(ctx, body, out)
	local t = tab(body.template) or {}
	local ev = base(ctx, "template", body)
	ev.template = { name = str(t.name), language = t.language,
	    content = str(t.content) or str(body.content),
	    components = tab(t.components) }
	ev.recipient = idstr(body.to)
	ev.conversation = ev.recipient
	ev.timestamp = timestamp(body.timestamp) or timestamp(t.timestamp)
	out[#out + 1] = ev
end

local function is_accepted(body)
	local msgs, contacts = tab(body.messages), tab(body.contacts)
	return body.messaging_product ~= nil and body.entry == nil and
	    msgs and type(msgs[1]) == "table" and msgs[1].id ~= nil and
	    contacts and type(contacts[1]) == "table" and
	    contacts[1].input ~= nil
end

-- Classify a decoded Insider or Meta body: a Meta envelope, a Cloud API
-- error{}, On-Premise errors[], a template, an accepted send; in this order.
local function classify(ctx, body, out)
	if body.object == "whatsapp_business_account" then
		envelope(ctx, body, out)
	elseif tab(body.error) then
		out[#out + 1] = error_event(ctx, body,
		    error_list({ body.error }))
	elseif tab(body.errors) and error_list(body.errors) then
		out[#out + 1] = error_event(ctx, body, error_list(body.errors))
	elseif tab(body.template) or (body.type == "template" and
	    body.recipient_type ~= nil) then
		template(ctx, body, out)
	elseif is_accepted(body) then
		accepted(ctx, body, out)
	end
	if #out == 0 then
		out[#out + 1] = unknown_event(ctx, body)
	end
end

-- Kapso: deliveries and their events ----------------------------------

-- Kapso gives phone numbers with "+"; Meta's wa_id has digits only.
local function wa_id(v)
	v = idstr(v)
	return v and (v:gsub("^%+", ""))
end

local kapso_status = { sent = true, delivered = true, read = true,
    failed = true }

-- A Kapso message: Meta's fields, and for media what Kapso adds (its
-- own media URL and data).
local function kapso_message(ev, m, conv)
	message_content(ev, m)
	if media_types[ev.type] then
		local k = tab(m.kapso) or {}
		local md = tab(k.media_data) or {}
		local mt = tab(k.message_type_data) or {}
		ev.media = ev.media or {}
		ev.media.url = ev.media.url or str(k.media_url) or str(md.url)
		ev.media.mime_type = ev.media.mime_type or str(md.content_type)
		ev.media.filename = ev.media.filename or str(md.filename)
		ev.media.caption = ev.media.caption or str(mt.caption)
		ev.text = ev.media.caption
	end
	if conv then
		local ck = tab(conv.kapso)
		ev.name = ck and str(ck.contact_name)
	end
end

-- Errors of a failed Kapso message: its raw status history, if any.
local function kapso_errors(m)
	local k = tab(m.kapso) or {}
	local out = error_list(m.errors)
	for _, st in ipairs(tab(k.statuses) or {}) do
		if type(st) == "table" then
			local e = error_list(st.errors)
			if e then out = e end
		end
	end
	return out
end

-- The entry of Kapso's raw status history (Meta's status objects) for
-- status, the last one if several.
local function kapso_status_entry(m, status)
	local k = tab(m.kapso) or {}
	local found
	for _, st in ipairs(tab(k.statuses) or {}) do
		if type(st) == "table" and st.status == status then found = st end
	end
	return found
end

-- One Kapso v2 item (a body, or one of a batch's data[]).
local function kapso_item(ctx, name, item, out)
	local conv = tab(item.conversation)
	local m = tab(item.message)
	local ev
	local suffix = name and name:match("^whatsapp%.message%.(%a+)$")
	if m and (suffix == "received" or (suffix == nil and
	    (tab(m.kapso) or {}).direction == "inbound")) then
		ev = base(ctx, "message", item)
		kapso_message(ev, m, conv)
		ev.from = wa_id(m.from) or (conv and wa_id(conv.phone_number))
	elseif m and suffix and kapso_status[suffix] then
		ev = base(ctx, "status", item)
		ev.status = suffix
		ev.message_id = idstr(m.id)
		-- Meta's own status object, when Kapso passes it on, has the
		-- time of the status (m.timestamp is when the message was sent)
		local st = kapso_status_entry(m, suffix) or {}
		ev.timestamp = timestamp(st.timestamp) or timestamp(m.timestamp)
		ev.pricing = tab(st.pricing)
		ev.recipient = wa_id(m.to) or (conv and wa_id(conv.phone_number))
		ev.errors = kapso_errors(m)
	elseif name and name:match("^whatsapp%.conversation%.") then
		ev = base(ctx, "conversation", item)
		ev.conversation_info = conv
	else
		ev = base(ctx, "unknown", item)
	end
	ev.event = name
	ev.phone_number_id = idstr(item.phone_number_id) or
	    (conv and idstr(conv.phone_number_id)) or
	    (m and tab(m.kapso) and idstr(m.kapso.phone_number_id))
	if conv and idstr(conv.id) then
		ev.conversation = "kapso:" .. idstr(conv.id)
	end
	out[#out + 1] = ev
end

-- The legacy v1 payload: message_type, content, whatsapp_config.
local function kapso_legacy(ctx, name, body, out)
	local m = tab(body.message) or {}
	local conv = tab(body.conversation)
	local wc = tab(body.whatsapp_config) or {}
	local suffix = name and name:match("^whatsapp%.message%.(%a+)$")
	local ev
	if suffix and kapso_status[suffix] then
		ev = base(ctx, "status", body)
		ev.status = suffix
		ev.recipient = wa_id(m.phone_number)
	elseif m.id ~= nil and (suffix == "received" or m.direction == "inbound") then
		ev = base(ctx, "message", body)
		ev.type = str(m.message_type) or "unknown"
		ev.from = wa_id(m.phone_number)
		ev.text = str(m.content)
	elseif name and name:match("^whatsapp%.conversation%.") then
		ev = base(ctx, "conversation", body)
		ev.conversation_info = conv
	else
		ev = base(ctx, "unknown", body)
	end
	if ev.kind == "message" or ev.kind == "status" then
		ev.message_id = idstr(m.id)
		ev.timestamp = timestamp(m.created_at) or timestamp(m.timestamp)
	end
	ev.event = name
	ev.display_phone_number = idstr(wc.display_phone_number)
	ev.phone_number_id = idstr(body.phone_number_id)
	if conv and idstr(conv.id) then
		ev.conversation = "kapso:" .. idstr(conv.id)
	end
	out[#out + 1] = ev
end

-- A string that says something: "" counts as absent.
local function nonempty(v)
	v = str(v)
	return v ~= "" and v or nil
end

local function kapso(ctx, body, out)
	local h = ctx.headers or {}
	local name = nonempty(h.event) or nonempty(body.type) or
	    nonempty(body.event)
	if body.object == "whatsapp_business_account" then
		envelope(ctx, body, out)		-- a raw Meta forward
		if #out == 0 then out[1] = unknown_event(ctx, body) end
		for _, ev in ipairs(out) do ev.event = name end
		return
	end
	if body.batch == true or (h.batch and h.batch:lower() == "true") then
		for _, item in ipairs(tab(body.data) or {}) do
			if type(item) == "table" then
				kapso_item(ctx, name, item, out)
			end
		end
		if #out == 0 then out[1] = unknown_event(ctx, body) end
		return
	end
	if (h.version and h.version:lower() == "v1") or tab(body.whatsapp_config) or
	    (tab(body.message) and body.message.message_type ~= nil) then
		return kapso_legacy(ctx, name, body, out)
	end
	kapso_item(ctx, name, body, out)
end

-- A JSON text as the table of a JSON object; nil, reason for anything
-- else (the reason is for the sender's 400).
function M.parse(body)
	local ok, t = pcall(cjson.decode, body)
	if not ok then
		local msg = tostring(t):gsub("^.-:%d+: ", "")
		return nil, "body is not valid JSON: " .. msg
	end
	if type(t) ~= "table" or (next(t) ~= nil and #t > 0) or
	    (next(t) == nil and find(body, "^%s*%[")) then
		return nil, "body is not a JSON object"
	end
	return t
end

-- The events of t, a body from provider that M.parse decoded.
local function events_of(provider, t, ctx)
	local c = { provider = provider, endpoint = ctx and ctx.endpoint,
	    headers = ctx and ctx.headers }
	local out = {}
	if provider == "kapso" then
		kapso(c, t, out)
	else
		c.key = idstr(t.key)
		classify(c, t, out)
	end
	return out
end

-- Decode body (a JSON text) from provider into a list of events.  ctx may
-- give endpoint.  Returns nil, reason for a body that is not a JSON object.
function M.decode(provider, body, ctx)
	local t, err = M.parse(body)
	if not t then return nil, err end
	return events_of(provider, t, ctx)
end

-- The dedup key (README, HTTP answers) of events with a natural id; nil
-- for the others (the C core keys those by the body's SHA-256 and the
-- index).
local function dedup_key(ev)
	local id = ev.message_id
	if not id then return nil end
	if ev.kind == "message" then return "m:" .. id end
	if ev.kind == "accepted" then return "a:" .. id end
	if ev.kind == "status" and ev.status then
		return "s:" .. id .. ":" .. ev.status
	end
	return nil
end
M.dedup_key = dedup_key

-- How many values for_inbox gives per event.
M.FIELDS = 7

-- For the C core: describe and encode each event of t (a body M.parse
-- decoded) for the inbox.  Returns the count n and a list of n times
-- FIELDS values (kind, conversation, dedup key, message id, status, the
-- event's table, error code; false for none).  src/envelope.c gives the
-- same for the Meta envelopes it reads itself.
function M.rows(provider, t, endpoint, headers)
	local events = events_of(provider, t, { endpoint = endpoint,
	    headers = headers })
	local idem = provider == "kapso" and headers and
	    nonempty(headers.idempotency)
	local out, n = {}, 0
	for i, ev in ipairs(events) do
		-- Kapso's key marks the delivery (the same key is a duplicate
		-- whatever the body); the natural key still catches a fallback
		-- delivery that came with a new key
		local key = dedup_key(ev)
		if idem then
			key = "k:" .. idem .. ":" .. (i - 1) ..
			    (key and "\n" .. key or "")
		end
		out[n + 1] = ev.kind
		out[n + 2] = ev.conversation or false
		out[n + 3] = key or false
		out[n + 4] = ev.message_id or false
		out[n + 5] = ev.kind == "status" and ev.status or false
		out[n + 6] = ev		-- packed by the C core (src/pack.c)
		-- the provider's error code (130429...), for /metrics
		local e = ev.errors and ev.errors[1]
		out[n + 7] = ev.code or (e and e.code) or false
		n = n + 7
	end
	return #events, out
end

-- M.parse, then M.rows: n and the rows, or nil, err.
function M.for_inbox(provider, body, endpoint, headers)
	local t, err = M.parse(body)
	if not t then return nil, err end
	return M.rows(provider, t, endpoint, headers)
end

return M
