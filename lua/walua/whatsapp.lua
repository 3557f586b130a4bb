-- walua/whatsapp.lua - replies on every provider, sent once.
--
--   wa.reply(ev, text | message [, { quote = true }]) -> message id | nil, err
--   wa.send{ provider, from | phone_number_id, to, text | message }
--       -> message id | nil, err (Insider One: from, the business
--       number; Meta and Kapso: phone_number_id, its id)
--   wa.mark_read(ev [, { typing = true }]) -> true | nil, err
--   wa.media(ev) -> { body, mime_type, sha256, filename } | nil, err
--
-- `message` is Meta's message object (type plus text/image/interactive/
-- template/...), whatever the provider: Meta's Cloud API and Kapso's
-- Meta-compatible API take it as it is; Insider One gets it through
-- walua.insider.send (v2 when gateway credentials are set, else v1).  For
-- Insider the id returned is its tracking key.
--
-- Once per event: a send made while handling an event is journaled under
-- (ev.id, its order in the run) before it goes out and answered after;
-- when the event runs again, a send the provider already answered with an
-- id returns that id without sending, and one with no answer (walua died
-- during the request) is sent again, logged as a possible duplicate.
--
-- Pace: sends per business number go through a pace shared by every
-- worker (outbound.rate_per_number a second); a send waits its turn,
-- yielding.  Throttling (HTTP 429, Meta 130429, 131056, 80007) is retried
-- with backoff within the handler's budget, then returned as nil, err.

local http = require "walua.http"
local httpc = require "walua.httpc"
local log = require "walua.log"
local settings = require "walua.settings"
local insider = require "walua.insider"
local out = require "walua.outbound"
local crypto = require "walua.crypto"

local M = {}

local THROTTLED = { [130429] = true, [131056] = true, [80007] = true,
    [4] = true }
local MAX_TRIES = 4

local function fail(msg, status, code)
	return http.error(status, code, msg)
end

local function digits(s)
	if type(s) ~= "string" and type(s) ~= "number" then return nil end
	s = tostring(s):gsub("^%+", "")
	return s:match("^%d+$") and s or nil
end

-- The Meta-compatible API of provider: base URL and headers, or nil, err.
local function graph(provider)
	if provider == "meta" then
		local m = settings.meta or {}
		if not m.access_token then
			return nil, "meta.access_token is not configured"
		end
		return m.api_url .. "/" .. m.graph_version,
		    { Authorization = "Bearer " .. m.access_token }
	elseif provider == "kapso" then
		local k = settings.kapso or {}
		if not k.api_key then
			return nil, "kapso.api_key is not configured"
		end
		return k.meta_url .. "/" .. k.graph_version,
		    { ["X-API-Key"] = k.api_key }
	end
	return nil, "provider must be \"insider\", \"kapso\" or \"meta\""
end

-- The provider's error in an answer: nil, err with its code and message.
local function answer_error(res)
	local e = type(res.json) == "table" and res.json.error
	if type(e) == "string" then		-- Kapso's own errors
		return fail(e, res.status)
	end
	e = type(e) == "table" and e or {}
	return fail(type(e.message) == "string" and e.message or
	    ("HTTP " .. res.status), res.status, e.code)
end

-- Wait for Retry-After (or back off), if the budget lasts; false if not.
local function back_off(res, try)
	local ra = tonumber(res.headers and res.headers["retry-after"])
	local ms = ra and math.floor(ra * 1000) or 250 * 2 ^ (try - 1)
	return httpc.sleep(math.floor(math.min(ms, 60000)))
end

-- POST body to the provider's messages endpoint for phone, retrying
-- throttled answers.  Returns the answer's JSON | nil, err.
local function post(provider, phone, body)
	local base, headers = graph(provider)
	if not base then return fail(headers) end
	local url = base .. "/" .. http.urlencode(phone) .. "/messages"
	for try = 1, MAX_TRIES do
		local res, e = http.post(url, body, { headers = headers,
		    api = provider })
		if not res then return nil, e end
		if res.status == 200 and type(res.json) == "table" then
			return res.json
		end
		local code = type(res.json) == "table" and
		    type(res.json.error) == "table" and res.json.error.code
		if res.status == 429 or THROTTLED[code] then
			out.count("walua_outbound_throttled_total",
			    string.format('provider="%s",code="%s"', provider,
			    tostring(code or res.status)))
			if try == MAX_TRIES or not back_off(res, try) then
				return answer_error(res)
			end
		else
			return answer_error(res)
		end
	end
end

local function message_of(text_or_message)
	if type(text_or_message) == "string" then
		return { type = "text", text = { body = text_or_message } }
	end
	if type(text_or_message) ~= "table" or
	    type(text_or_message.type) ~= "string" then
		error("a text (string) or Meta's message object (a table with " ..
		    "a type) is expected", 3)
	end
	local m = {}
	for k, v in pairs(text_or_message) do m[k] = v end
	return m
end

-- Make one send (no journal): the provider's message id | nil, err.  It
-- waits its turn in the number's pace first.
local function deliver(provider, phone, to, message)
	if phone then
		local rate = (settings.outbound or {}).rate_per_number or 80
		local wait, err = out.pace(provider .. ":" .. phone, rate)
		if not wait then return nil, err end
		if wait > 0 then httpc.wait(wait) end
	end
	if provider == "insider" then
		return insider.send{ from = phone, to = to, message = message }
	end
	local body = { messaging_product = "whatsapp", recipient_type =
	    "individual", to = to }
	for k, v in pairs(message) do body[k] = v end
	local j, err = post(provider, phone, body)
	if not j then return nil, err end
	local m = type(j.messages) == "table" and j.messages[1]
	if type(m) ~= "table" or type(m.id) ~= "string" then
		return fail("the answer has no message id", 200)
	end
	return m.id
end

-- deliver, journaled when it runs for an event.
local function journaled(provider, phone, to, message)
	local id, n = out.next_send()
	if id then
		local mid, _, found = out.journal_get(id, n)
		if mid then
			log.info("send already made in an earlier run; not sent " ..
			    "again", { provider = provider, send = n,
			    sent_id = mid })
			out.count("walua_sends_total", string.format(
			    'provider="%s",result="journaled"', provider))
			return mid
		end
		if found then
			log.warn("send made again: an earlier run sent it and " ..
			    "got no answer (the user may see it twice)",
			    { provider = provider, send = n })
		end
		local ok, err = out.journal_begin(id, n, provider, phone, to)
		if not ok then return nil, err end
	end
	local mid, err = deliver(provider, phone, to, message)
	if id then
		out.journal_answer(id, n, mid, err and tostring(err) or nil)
	end
	out.count("walua_sends_total", string.format(
	    'provider="%s",result="%s"', provider, mid and "ok" or "error"))
	return mid, err
end

function M.send(t)
	if type(t) ~= "table" then error("whatsapp.send: expected a table", 2) end
	for k in pairs(t) do
		if not ({ provider = true, from = true, phone_number_id = true,
		    to = true, text = true, message = true })[k] then
			return fail("whatsapp.send: unknown field '" .. tostring(k) ..
			    "'")
		end
	end
	local provider = t.provider
	if provider ~= "insider" and provider ~= "kapso" and provider ~= "meta"
	then
		return fail("provider must be \"insider\", \"kapso\" or \"meta\"")
	end
	-- Insider One sends from a number (from); Meta and Kapso from a
	-- number's id (phone_number_id, or from).  A handler that passes both
	-- works on all three.
	local phone = t.phone_number_id or t.from
	if provider == "insider" then phone = t.from end
	if provider ~= "insider" and not digits(phone) then
		return fail("phone_number_id (the business number's id) is needed")
	end
	local to = digits(t.to)
	if not to then return fail("to must be the user's WhatsApp number") end
	if (t.text == nil) == (t.message == nil) then
		return fail("give text or message (one of them)")
	end
	return journaled(provider, phone and tostring(phone), to,
	    message_of(t.text or t.message))
end

-- The user an event came from (or concerns).
local function user_of(ev)
	return digits(ev.from) or digits(ev.recipient) or
	    (ev.conversation and digits(ev.conversation:match(":(%d+)$")))
end

function M.reply(ev, text_or_message, opts)
	if type(ev) ~= "table" then error("whatsapp.reply: ev expected", 2) end
	local to = user_of(ev)
	if not to then return fail("the event names no user to reply to") end
	local message = message_of(text_or_message)
	if type(opts) == "table" and opts.quote and ev.message_id then
		message.context = { message_id = ev.message_id }
	end
	local phone = ev.provider == "insider" and
	    (ev.display_phone_number or nil) or ev.phone_number_id
	if ev.provider ~= "insider" and not phone then
		return fail("the event names no business number")
	end
	return journaled(ev.provider, phone, to, message)
end

function M.mark_read(ev, opts)
	if type(ev) ~= "table" then error("whatsapp.mark_read: ev expected", 2) end
	if ev.provider == "insider" then
		return fail("Insider One documents no read receipt call")
	end
	if not ev.message_id or not ev.phone_number_id then
		return fail("the event is not a message (no message id)")
	end
	local body = { messaging_product = "whatsapp", status = "read",
	    message_id = ev.message_id }
	if type(opts) == "table" and opts.typing then
		body.typing_indicator = { type = "text" }
	end
	local j, err = post(ev.provider, ev.phone_number_id, body)
	if not j then return nil, err end
	return true
end

-- base64 of hex, to compare a digest written either way.
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function hex_to_base64(hex)
	local bytes = {}
	for h in hex:gmatch("%x%x") do bytes[#bytes + 1] = tonumber(h, 16) end
	local o = {}
	for i = 1, #bytes, 3 do
		local a, b, c = bytes[i], bytes[i + 1], bytes[i + 2]
		local n = a * 65536 + (b or 0) * 256 + (c or 0)
		for j = 3, 0, -1 do
			local k = (n // 64 ^ j) % 64
			o[#o + 1] = B64:sub(k + 1, k + 1)
		end
		if not b then o[#o], o[#o - 1] = "=", "=" elseif not c then
			o[#o] = "=" end
	end
	return table.concat(o)
end

function M.media(ev)
	if type(ev) ~= "table" then error("whatsapp.media: ev expected", 2) end
	local media = ev.media
	if type(media) ~= "table" then
		return fail("the event carries no media")
	end
	local cap = (settings.outbound or {}).max_media_bytes or 16777216
	local url, headers = media.url, nil
	if ev.provider == "meta" or ev.provider == "kapso" then
		if not media.id then return fail("the media has no id") end
		local base, h = graph(ev.provider)
		if not base then return fail(h) end
		local q = ev.provider == "kapso" and ("?phone_number_id=" ..
		    http.urlencode(ev.phone_number_id or "")) or ""
		local res, err = http.get(base .. "/" .. http.urlencode(media.id) ..
		    q, { headers = h, api = ev.provider })
		if not res then return nil, err end
		-- Meta's URL takes the same token; Kapso's download_url
		-- carries its own (its url is Meta's, for Meta's token)
		local key = ev.provider == "kapso" and "download_url" or "url"
		if res.status ~= 200 or type(res.json) ~= "table" or
		    type(res.json[key]) ~= "string" then
			return answer_error(res)
		end
		url = res.json[key]
		if ev.provider == "meta" then headers = h end
	end
	if type(url) ~= "string" then
		return fail("the event's media has no URL to fetch")
	end
	local res, err = http.get(url, { headers = headers, max_bytes = cap,
	    api = ev.provider })
	if not res then return nil, err end
	if res.status ~= 200 then return answer_error(res) end
	local sum = crypto.sha256(res.body)
	local want = media.sha256
	if type(want) == "string" and want ~= "" and want:lower() ~= sum and
	    want ~= hex_to_base64(sum) then
		return fail("media sha256 mismatch: the download is not what " ..
		    "the event announced")
	end
	return { body = res.body, sha256 = sum,
	    mime_type = media.mime_type or res.headers["content-type"],
	    filename = media.filename }
end

return M
