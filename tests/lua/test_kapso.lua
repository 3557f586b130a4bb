-- test_kapso.lua - field-by-field expectations for walua.normalize, Kapso.
--
-- One test per fixture under tests/fixtures/kapso/ (v2 events and message
-- objects, the batch envelope, the legacy v1 payload, a raw Meta forward),
-- then the dedup keys that for_inbox gives (README, HTTP answers), then
-- header handling and fallbacks on inline bodies, and the rejections.
-- Each event is compared whole, without `raw`; `raw` is checked by a field
-- or two.  Uses the globals of testlib.lua; the runner calls T.finish().

local loaded, normalize = pcall(require, "walua.normalize")
if not loaded then
	test("require walua.normalize", function() error(normalize, 0) end)
	return
end
local cjson = require "cjson"
local null = cjson.null

local EP = "/webhooks/kapso"

local PNID = "647015955153740"			-- the business number's id
local BIZ = "15557823190"			-- its display number
local USER = "14155550123"			-- the customer, "+14155550123"
local CID = "3f2b8c1e-7a4d-4b9e-9c2f-5d6e7f8a9b0c"
local CONV = "kapso:" .. CID
local NAME = "Maria Gonzalez"
local IDEM = "5b0c7e2a-1d9f-4c3b-8e6a-2f4d9b1c7a30"	-- X-Idempotency-Key

local IN_TEXT = "wamid.HBgLMTQxNTU1NTAxMjMVAgASGBQzQUI1QzFEMEU4RjdBNjkyNDAxQgA="
local IN_IMAGE = "wamid.HBgLMTQxNTU1NTAxMjMVAgASGBQzQTlFMkQ3QzQxQjA1RjZBODgxOQA="
local IN_LOC = "wamid.HBgLMTQxNTU1NTAxMjMVAgASGBQzQUQ0RjE4QjZFMjc5QzBEMzM1NgA="
local IN_BTN = "wamid.HBgLMTQxNTU1NTAxMjMVAgASGBQzQUY3QjIwQzlEODg2RTQxNTBBMwA="
local IN_REACT = "wamid.HBgLMTQxNTU1NTAxMjMVAgASGBQzQTJDOEU1MUY0MEI3RDk2QTE3NAA="
local OUT_MENU = "wamid.HBgLMTQxNTU1NTAxMjMVAgARGBI1QjdFOTAzRjJDNDFBOEQ2NzAA"
local OUT_SHIP = "wamid.HBgLMTQxNTU1NTAxMjMVAgARGBI4RDJBNjE5QzA3RTNGNTFCMjQA"
local OUT_FAIL = "wamid.HBgLMTQxNTU1NTAxMjMVAgARGBJBMzE0RjhDMkU5QjY3MEQ1NDEA"
local B1 = "wamid.HBgLMTQxNTU1NTAxMjMVAgASGBQzQTExMUMyRDNFNEY1QTZCN0M4RAA="
local B2 = "wamid.HBgLMTQxNTU1NTAxMjMVAgASGBQzQTIyMkQzRTRGNUE2QjdDOEQ5RQA="
local B3 = "wamid.HBgLMTQxNTU1NTAxMjMVAgASGBQzQTMzM0U0RjVBNkI3QzhEOUUwRgA="
local FWD = "wamid.HBgLMTQxNTU1NTAxMjMVAgASGBQzQTQ0NEY1QTZCN0M4RDlFMEYxQQA="
local MEDIA_URL = "https://api.kapso.ai/rails/active_storage/blobs/redirect/eyJfcmFpbHMiOnsiZGF0YSI6ODgyMTQsInB1ciI6ImJsb2JfaWQifX0--4c1e9a7b2f0d/photo.jpg"
local SHIP_TEXT = "Your order #4821 shipped today. Track it: https://track.example.com/4821"

-- The ctx of a delivery: X-Webhook-Event plus the other headers in extra.
local function ctx(event, extra)
	local h = { event = event, version = "v2", idempotency = IDEM }
	for k, v in pairs(extra or {}) do h[k] = v end
	if extra and extra.version == false then h.version = nil end
	if extra and extra.idempotency == false then h.idempotency = nil end
	return { endpoint = EP, headers = h }
end

-- Decode body with c, check that it gives exactly n events, and return the
-- events with `raw` taken off, and the raws.
local function decode(body, c, n, what)
	what = what or "body"
	local evs, err = normalize.decode("kapso", body, c)
	if evs == nil then
		error(what .. ": decode returned nil, " .. tostring(err), 3)
	end
	ok(type(evs) == "table", what .. ": decode returns a table")
	eq(#evs, n, what .. ": number of events")
	local raws = {}
	for i = 1, n do
		local ev = evs[i]
		ok(type(ev) == "table", what .. ": event " .. i .. " is a table")
		ok(type(ev.raw) == "table", what .. ": event " .. i .. " has raw")
		raws[i] = ev.raw
		ev.raw = nil
	end
	return evs, raws
end

local function events(name, n, c)
	return decode(fixture("kapso/" .. name), c, n, name)
end

-- A copy of base with the fields of extra added.
local function with(base, extra)
	local t = {}
	for k, v in pairs(base) do t[k] = v end
	for k, v in pairs(extra or {}) do t[k] = v end
	return t
end

local K = { provider = "kapso", endpoint = EP }

-- An inbound message of the fixtures' conversation.
local function kmsg(extra)
	return with(with(K, {
		kind = "message", event = "whatsapp.message.received",
		phone_number_id = PNID, conversation = CONV,
		from = USER, name = NAME,
	}), extra)
end

---------------------------------------------------------------------------
-- whatsapp.message.received
---------------------------------------------------------------------------

local function received(file, want)
	local evs, raws = events(file, 1, ctx("whatsapp.message.received"))
	eq(evs[1], kmsg(want), "event")
	eq(raws[1].message.id, want.message_id, "raw is the whole body")
	eq(raws[1].conversation.id, CID, "raw.conversation.id")
	eq(raws[1].phone_number_id, PNID, "raw.phone_number_id")
	return raws[1]
end

test("kapso received text", function()
	local raw = received("message_received_text.json", {
		type = "text", message_id = IN_TEXT, timestamp = 1761661501,
		text = "Hi! Is my order #4821 on its way?",
	})
	eq(raw.is_new_conversation, true, "raw.is_new_conversation")
	eq(raw.message.kapso.origin, "cloud_api", "raw.message.kapso.origin")
end)

test("kapso received image: media from kapso.media_url/media_data", function()
	-- no message.from: from is conversation.phone_number without "+"
	local raw = received("message_received_image.json", {
		type = "image", message_id = IN_IMAGE, timestamp = 1761661620,
		text = "This is how the box arrived",
		media = {
			id = "1184467339823761",
			caption = "This is how the box arrived",
			mime_type = "image/jpeg",
			filename = "photo.jpg",
			url = MEDIA_URL,
		},
	})
	eq(raw.message.kapso.media_data.byte_size, 204800,
	    "raw.message.kapso.media_data.byte_size")
end)

test("kapso received location", function()
	received("message_received_location.json", {
		type = "location", message_id = IN_LOC, timestamp = 1761661740,
		location = {
			latitude = 37.7749, longitude = -122.4194,
			name = "San Francisco",
			address = "San Francisco, CA, USA",
		},
	})
end)

test("kapso received interactive button_reply with context", function()
	local raw = received("message_received_interactive.json", {
		type = "interactive", message_id = IN_BTN, timestamp = 1761661860,
		text = "Confirm", reply_id = "btn_1",
		context = { from = BIZ, id = OUT_MENU },
	})
	eq(raw.message.interactive.type, "button_reply",
	    "raw.message.interactive.type")
end)

test("kapso received reaction", function()
	received("message_received_reaction.json", {
		type = "reaction", message_id = IN_REACT, timestamp = 1761661920,
		reaction = { message_id = OUT_MENU, emoji = "\u{1F44D}" },
	})
end)

---------------------------------------------------------------------------
-- whatsapp.message.sent/delivered/read/failed
---------------------------------------------------------------------------

local PRICING_SERVICE = {
	billable = false, pricing_model = "PMP",
	type = "free_customer_service", category = "service",
}

-- A status fixture compared whole except `pricing` (checked on its own
-- below); returns the pricing the decoder gave, and the raw.
local function status(file, st, want)
	local evs, raws = events(file, 1, ctx("whatsapp.message." .. st))
	local pricing = evs[1].pricing
	evs[1].pricing = nil
	eq(evs[1], with(with(K, {
		kind = "status", event = "whatsapp.message." .. st,
		phone_number_id = PNID, conversation = CONV,
		status = st, recipient = USER,
	}), want), "event")
	eq(raws[1].message.id, want.message_id, "raw is the whole body")
	eq(raws[1].message.kapso.status, st, "raw.message.kapso.status")
	return pricing, raws[1]
end

test("kapso message sent", function()
	local _, raw = status("message_sent.json", "sent", {
		message_id = OUT_SHIP, timestamp = 1761661811,
	})
	eq(raw.message.text.body, SHIP_TEXT, "raw.message.text.body")
end)

test("kapso message delivered (no message.to, no conversation.kapso)", function()
	status("message_delivered.json", "delivered", {
		message_id = OUT_SHIP, timestamp = 1761661813,
	})
end)

test("kapso message read", function()
	status("message_read.json", "read", {
		message_id = OUT_SHIP, timestamp = 1761661845,
	})
end)

test("kapso message failed: errors from kapso.statuses[]", function()
	local _, raw = status("message_failed.json", "failed", {
		message_id = OUT_FAIL, timestamp = 1761748303,
		errors = { {
			code = 131049,
			title = "This message was not delivered to maintain healthy ecosystem engagement.",
			message = "This message was not delivered to maintain healthy ecosystem engagement.",
			details = "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
			href = "/documentation/business-messaging/whatsapp/support/error-codes",
		} },
	})
	eq(#raw.message.kapso.statuses, 2, "raw keeps the status history")
end)

-- A status's timestamp is the time of the status: Meta's own status object
-- in kapso.statuses[] when Kapso passes it on (message.timestamp is when
-- the message was sent).
-- A status carries `pricing` (README, Events).  Kapso gives Meta's raw
-- status objects in message.kapso.statuses[]; the entry of the event's own
-- status carries the pricing Meta sent with it (none for read).
test("kapso status pricing from kapso.statuses[]", function()
	eq(status("message_sent.json", "sent", {
		message_id = OUT_SHIP, timestamp = 1761661811,
	}), PRICING_SERVICE, "sent: pricing")
	eq(status("message_delivered.json", "delivered", {
		message_id = OUT_SHIP, timestamp = 1761661813,
	}), PRICING_SERVICE, "delivered: pricing")
	eq(status("message_read.json", "read", {
		message_id = OUT_SHIP, timestamp = 1761661845,
	}), nil, "read: no pricing")
end)

---------------------------------------------------------------------------
-- whatsapp.conversation.* and other events
---------------------------------------------------------------------------

local function conversation_event(file, name)
	local evs, raws = events(file, 1, ctx(name))
	return evs[1], raws[1]
end

test("kapso conversation created", function()
	local ev, raw = conversation_event("conversation_created.json",
	    "whatsapp.conversation.created")
	eq(ev, with(K, {
		kind = "conversation", event = "whatsapp.conversation.created",
		phone_number_id = PNID, conversation = CONV,
		conversation_info = {
			id = CID, phone_number = "+" .. USER, status = "active",
			last_active_at = "2025-10-28T14:25:01Z",
			created_at = "2025-10-28T14:25:01Z",
			updated_at = "2025-10-28T14:25:01Z",
			metadata = {}, phone_number_id = PNID,
			kapso = {
				contact_name = NAME, messages_count = 1,
				last_message_id = IN_TEXT,
				last_message_type = "text",
				last_message_timestamp = "2025-10-28T14:25:01Z",
				last_message_text = "Hi! Is my order #4821 on its way?",
				last_inbound_at = "2025-10-28T14:25:01Z",
				last_outbound_at = null,
			},
		},
	}), "event")
	eq(raw.phone_number_id, PNID, "raw is the whole body")
	eq(raw.conversation.status, "active", "raw.conversation.status")
end)

test("kapso conversation ended", function()
	local ev, raw = conversation_event("conversation_ended.json",
	    "whatsapp.conversation.ended")
	eq(ev, with(K, {
		kind = "conversation", event = "whatsapp.conversation.ended",
		phone_number_id = PNID, conversation = CONV,
		conversation_info = {
			id = CID, phone_number = "+" .. USER, status = "ended",
			last_active_at = "2025-10-28T14:32:00Z",
			created_at = "2025-10-28T14:25:01Z",
			updated_at = "2025-10-29T14:32:00Z",
			metadata = {}, phone_number_id = PNID,
			kapso = {
				contact_name = NAME, messages_count = 8,
				last_message_id = IN_REACT,
				last_message_type = "reaction",
				last_message_timestamp = "2025-10-28T14:32:00Z",
				last_message_text = "\u{1F44D}",
				last_inbound_at = "2025-10-28T14:32:00Z",
				last_outbound_at = "2025-10-28T14:30:15Z",
			},
		},
	}), "event")
	eq(raw.conversation.status, "ended", "raw is the whole body")
end)

test("kapso conversation inactive", function()
	local ev, raw = conversation_event("conversation_inactive.json",
	    "whatsapp.conversation.inactive")
	eq(ev, with(K, {
		kind = "conversation", event = "whatsapp.conversation.inactive",
		phone_number_id = PNID, conversation = CONV,
		conversation_info = {
			id = CID, phone_number = "+" .. USER, status = "active",
			phone_number_id = PNID,
		},
	}), "event")
	eq(raw.inactivity.minutes, 60, "raw.inactivity.minutes")
	eq(raw.since_message.whatsapp_message_id, IN_REACT,
	    "raw.since_message.whatsapp_message_id")
end)

test("kapso phone_number.created is unknown", function()
	local evs, raws = events("phone_number_created.json", 1,
	    ctx("whatsapp.phone_number.created"))
	eq(evs[1], with(K, {
		kind = "unknown", event = "whatsapp.phone_number.created",
		phone_number_id = PNID,
	}), "event")
	eq(raws[1].project.id, "990e8400-e29b-41d4-a716-446655440004",
	    "raw is the whole body")
	eq(raws[1].customer.id, "880e8400-e29b-41d4-a716-446655440003",
	    "raw.customer.id")
end)

---------------------------------------------------------------------------
-- Batch, legacy v1, Meta forward
---------------------------------------------------------------------------

local BATCH_TEXT = { "Hello again", "I ordered a blue jacket",
    "but a red one arrived \u{1F615}" }

-- The three events of batch_3.json (from the conversation's phone_number:
-- the items have no message.from, and no conversation.kapso).
local function batch_want(event)
	local ids, ts = { B1, B2, B3 }, { 1761665401, 1761665402, 1761665404 }
	local want = {}
	for i = 1, 3 do
		want[i] = with(K, {
			kind = "message", event = event or "whatsapp.message.received",
			phone_number_id = PNID, conversation = CONV,
			type = "text", from = USER, message_id = ids[i],
			timestamp = ts[i], text = BATCH_TEXT[i],
		})
	end
	return want
end

test("kapso batch of 3: one event per data[] item, in order", function()
	local evs, raws = events("batch_3.json", 3,
	    ctx("whatsapp.message.received", { batch = "true" }))
	local want = batch_want()
	for i = 1, 3 do
		eq(evs[i], want[i], "event " .. i)
		eq(raws[i].message.id, want[i].message_id,
		    "raw " .. i .. " is the data[] item")
		eq(raws[i].is_new_conversation, false, "raw " .. i .. ".is_new_conversation")
		ok(raws[i].batch_info == nil, "raw " .. i .. " is not the envelope")
	end
end)

test("kapso batch: event name from body.type when no header", function()
	local evs = events("batch_3.json", 3,
	    ctx(nil, { batch = "true" }))
	local want = batch_want()
	for i = 1, 3 do eq(evs[i], want[i], "event " .. i) end
end)

test("kapso batch: X-Webhook-Event overrides body.type", function()
	-- a header naming another event wins over the body's type
	local evs = events("batch_3.json", 3,
	    ctx("whatsapp.message.sent", { batch = "true" }))
	for i = 1, 3 do
		eq(evs[i].kind, "status", "event " .. i .. ": kind")
		eq(evs[i].event, "whatsapp.message.sent", "event " .. i .. ": event")
		eq(evs[i].status, "sent", "event " .. i .. ": status")
		eq(evs[i].recipient, USER, "event " .. i .. ": recipient")
	end
end)

test("kapso batch detected by X-Webhook-Batch only", function()
	local item = '{"message":{"id":"wamid.HDR1","timestamp":"1761665500",' ..
	    '"type":"text","text":{"body":"one"},"kapso":{"direction":"inbound"}},' ..
	    '"conversation":{"id":"' .. CID .. '","phone_number":"+' .. USER .. '",' ..
	    '"phone_number_id":"' .. PNID .. '"},"phone_number_id":"' .. PNID .. '"}'
	local item2 = item:gsub("HDR1", "HDR2"):gsub('"one"', '"two"')
	local body = '{"type":"whatsapp.message.received","data":[' .. item ..
	    ',' .. item2 .. '],"batch_info":{"size":2,"window_ms":5000,' ..
	    '"first_sequence":7,"last_sequence":8,"conversation_id":"' .. CID .. '"}}'
	for _, flag in ipairs({ "true", "TRUE", "True" }) do
		local evs, raws = decode(body, ctx(nil, { batch = flag }), 2,
		    "X-Webhook-Batch: " .. flag)
		eq(evs[1], with(K, {
			kind = "message", event = "whatsapp.message.received",
			phone_number_id = PNID, conversation = CONV,
			type = "text", from = USER, message_id = "wamid.HDR1",
			timestamp = 1761665500, text = "one",
		}), "event 1")
		eq(evs[2].message_id, "wamid.HDR2", "event 2: message_id")
		eq(evs[2].text, "two", "event 2: text")
		eq(raws[2].message.id, "wamid.HDR2", "raw 2 is the item")
	end
end)

test("kapso batch: body batch=true without the header", function()
	local evs = events("batch_3.json", 3,
	    ctx("whatsapp.message.received"))
	local want = batch_want()
	for i = 1, 3 do eq(evs[i], want[i], "event " .. i) end
end)

test("kapso batch with no data is one unknown event", function()
	local evs, raws = decode('{"type":"whatsapp.message.received",' ..
	    '"batch":true,"data":[]}', ctx(nil, { batch = "true" }), 1)
	eq(evs[1], with(K, { kind = "unknown" }), "event")
	eq(raws[1].batch, true, "raw is the whole body")
end)

test("kapso legacy v1 payload", function()
	local evs, raws = events("legacy_v1.json", 1,
	    ctx("whatsapp.message.received", { version = "v1" }))
	eq(evs[1], with(K, {
		kind = "message", event = "whatsapp.message.received",
		conversation = "kapso:660e8400-e29b-41d4-a716-446655440001",
		display_phone_number = "+15557823190",
		type = "text", from = USER,
		message_id = "550e8400-e29b-41d4-a716-446655440000",
		timestamp = 1705314600,		-- 2024-01-15T10:30:00Z
		text = "Hello! Do you ship to Canada?",
	}), "event")
	eq(raws[1].whatsapp_config.id, "770e8400-e29b-41d4-a716-446655440002",
	    "raw is the whole body")
	eq(raws[1].message.content, "Hello! Do you ship to Canada?",
	    "raw.message.content")
end)

test("kapso legacy v1 detected by its shape, no headers", function()
	-- whatsapp_config and message_type, no version, no event name:
	-- direction inbound makes it a message
	local evs = events("legacy_v1.json", 1, { endpoint = EP, headers = {} })
	eq(evs[1], with(K, {
		kind = "message",
		conversation = "kapso:660e8400-e29b-41d4-a716-446655440001",
		display_phone_number = "+15557823190",
		type = "text", from = USER,
		message_id = "550e8400-e29b-41d4-a716-446655440000",
		timestamp = 1705314600,
		text = "Hello! Do you ship to Canada?",
	}), "event")
end)

test("kapso legacy v1 by message.message_type alone", function()
	local evs = decode('{"message":{"id":"550e8400-e29b-41d4-a716-446655440010",' ..
	    '"message_type":"image","content":"Photo caption","direction":"inbound",' ..
	    '"phone_number":"+' .. USER .. '","created_at":"2024-01-15T10:31:00+01:00"}}',
	    { endpoint = EP }, 1)
	eq(evs[1], with(K, {
		kind = "message",
		type = "image", from = USER,
		message_id = "550e8400-e29b-41d4-a716-446655440010",
		timestamp = 1705314660 - 3600,
		text = "Photo caption",
	}), "event")
end)

test("kapso legacy v1 status", function()
	local evs = decode('{"message":{"id":"550e8400-e29b-41d4-a716-446655440020",' ..
	    '"message_type":"text","content":"Thanks!","direction":"outbound",' ..
	    '"phone_number":"+' .. USER .. '","created_at":"2024-01-15T10:32:00Z"},' ..
	    '"conversation":{"id":"660e8400-e29b-41d4-a716-446655440001",' ..
	    '"phone_number":"+' .. USER .. '","status":"active"},' ..
	    '"whatsapp_config":{"id":"770e8400-e29b-41d4-a716-446655440002",' ..
	    '"display_phone_number":"+15557823190"}}',
	    ctx("whatsapp.message.delivered", { version = "v1" }), 1)
	eq(evs[1], with(K, {
		kind = "status", event = "whatsapp.message.delivered",
		conversation = "kapso:660e8400-e29b-41d4-a716-446655440001",
		display_phone_number = "+15557823190",
		status = "delivered", recipient = USER,
		message_id = "550e8400-e29b-41d4-a716-446655440020",
		timestamp = 1705314720,
	}), "event")
end)

test("kapso raw Meta forward is decoded as Meta's envelope", function()
	local evs, raws = events("meta_forward.json", 1,
	    ctx(nil, { version = false }))
	eq(evs[1], with(K, {
		kind = "message",
		phone_number_id = PNID, display_phone_number = BIZ,
		conversation = PNID .. ":" .. USER,
		type = "text", from = USER, name = NAME,
		message_id = FWD, timestamp = 1761669001,
		text = "Can I change the delivery address?",
	}), "event")
	eq(raws[1].id, FWD, "raw is the Meta message object")
	eq(raws[1].text.body, "Can I change the delivery address?", "raw.text.body")
end)

---------------------------------------------------------------------------
-- Dedup keys (README, HTTP answers) through for_inbox
---------------------------------------------------------------------------

-- for_inbox on a fixture: returns n and a list of per-event rows
-- { kind, conversation, key, message_id, status, ev (the event's table) }.
local function inbox(name, headers, body)
	local n, out = normalize.for_inbox("kapso", body or fixture("kapso/" .. name),
	    EP, headers)
	ok(n ~= nil, name .. ": for_inbox returned nil, " .. tostring(out))
	eq(math.type(n), "integer", name .. ": n is an integer")
	eq(#out, n * normalize.FIELDS, name .. ": values per event")
	local rows = {}
	for i = 1, n do
		local b = (i - 1) * normalize.FIELDS
		local ev = out[b + 6]
		eq(type(ev), "table", name .. ": the event is a table")
		rows[i] = { out[b + 1], out[b + 2], out[b + 3], out[b + 4],
		    out[b + 5], ev = ev }
	end
	return n, rows
end

local function H(event, extra)
	return ctx(event, extra).headers
end

test("kapso dedup: message with and without idempotency key", function()
	local n, rows = inbox("message_received_text.json",
	    H("whatsapp.message.received"))
	eq(n, 1, "n")
	eq({ table.unpack(rows[1], 1, 5) }, { "message", CONV,
	    "k:" .. IDEM .. ":0\nm:" .. IN_TEXT, IN_TEXT, false }, "row")
	eq(rows[1].ev.message_id, IN_TEXT, "JSON: message_id")
	eq(rows[1].ev.kind, "message", "JSON: kind")
	eq(rows[1].ev.conversation, CONV, "JSON: conversation")
	eq(rows[1].ev.raw.message.id, IN_TEXT, "JSON: raw")

	n, rows = inbox("message_received_text.json",
	    H("whatsapp.message.received", { idempotency = false }))
	eq(n, 1, "n without key")
	eq({ table.unpack(rows[1], 1, 5) }, { "message", CONV,
	    "m:" .. IN_TEXT, IN_TEXT, false }, "row without key")
end)

test("kapso dedup: statuses by message id and status", function()
	for _, st in ipairs({ "sent", "delivered", "read" }) do
		local _, rows = inbox("message_" .. st .. ".json",
		    H("whatsapp.message." .. st))
		eq({ table.unpack(rows[1], 1, 5) }, { "status", CONV,
		    "k:" .. IDEM .. ":0\ns:" .. OUT_SHIP .. ":" .. st, OUT_SHIP, st },
		    st .. " row")
		_, rows = inbox("message_" .. st .. ".json",
		    H("whatsapp.message." .. st, { idempotency = false }))
		eq(rows[1][3], "s:" .. OUT_SHIP .. ":" .. st, st .. " key without K")
	end
	local _, rows = inbox("message_failed.json", H("whatsapp.message.failed"))
	eq({ table.unpack(rows[1], 1, 5) }, { "status", CONV,
	    "k:" .. IDEM .. ":0\ns:" .. OUT_FAIL .. ":failed", OUT_FAIL, "failed" },
	    "failed row")
	eq(rows[1].ev.errors[1].code, 131049, "JSON: errors[1].code")
end)

test("kapso dedup: events without a natural id", function()
	for _, c in ipairs({
		{ "conversation_created.json", "whatsapp.conversation.created", "conversation", CONV },
		{ "conversation_ended.json", "whatsapp.conversation.ended", "conversation", CONV },
		{ "conversation_inactive.json", "whatsapp.conversation.inactive", "conversation", CONV },
		{ "phone_number_created.json", "whatsapp.phone_number.created", "unknown", false },
	}) do
		local n, rows = inbox(c[1], H(c[2]))
		eq(n, 1, c[1] .. ": n")
		eq({ table.unpack(rows[1], 1, 5) },
		    { c[3], c[4], "k:" .. IDEM .. ":0", false, false }, c[1] .. " row")
		eq(rows[1].ev.event, c[2], c[1] .. ": JSON event")
		_, rows = inbox(c[1], H(c[2], { idempotency = false }))
		eq(rows[1][3], false, c[1] .. ": no key without K")
	end
end)

test("kapso dedup: batch of 3 gives k:K:0..k:K:2", function()
	local n, rows = inbox("batch_3.json",
	    H("whatsapp.message.received", { batch = "true" }))
	eq(n, 3, "n")
	local ids = { B1, B2, B3 }
	for i = 1, 3 do
		eq({ table.unpack(rows[i], 1, 5) }, { "message", CONV,
		    "k:" .. IDEM .. ":" .. (i - 1) .. "\nm:" .. ids[i], ids[i], false },
		    "row " .. i)
		eq(rows[i].ev.raw.message.id, ids[i], "JSON " .. i .. ": raw is the item")
	end
	n, rows = inbox("batch_3.json",
	    H("whatsapp.message.received", { batch = "true", idempotency = false }))
	for i = 1, 3 do
		eq(rows[i][3], "m:" .. ids[i], "row " .. i .. " key without K")
	end
end)

test("kapso dedup: legacy v1 and Meta forward keep natural keys", function()
	local _, rows = inbox("legacy_v1.json",
	    H("whatsapp.message.received", { version = "v1" }))
	eq({ table.unpack(rows[1], 1, 5) }, { "message",
	    "kapso:660e8400-e29b-41d4-a716-446655440001",
	    "k:" .. IDEM .. ":0\nm:550e8400-e29b-41d4-a716-446655440000",
	    "550e8400-e29b-41d4-a716-446655440000", false }, "legacy row")
	_, rows = inbox("meta_forward.json", { idempotency = IDEM })
	eq({ table.unpack(rows[1], 1, 5) }, { "message", PNID .. ":" .. USER,
	    "k:" .. IDEM .. ":0\nm:" .. FWD, FWD, false }, "forward row")
	_, rows = inbox("meta_forward.json", {})
	eq(rows[1][3], "m:" .. FWD, "forward key without K")
end)

-- An empty X-Idempotency-Key is no key (as Insider's key "" is absent): a
-- "k::0" key would make every later delivery with an empty header a
-- duplicate of the first one, whatever its body.
test("kapso dedup: an empty idempotency key is no key", function()
	local _, rows = inbox("message_received_text.json",
	    H("whatsapp.message.received", { idempotency = "" }))
	eq(rows[1][3], "m:" .. IN_TEXT, "message key")
	_, rows = inbox("conversation_ended.json",
	    H("whatsapp.conversation.ended", { idempotency = "" }))
	eq(rows[1][3], false, "conversation key")
end)

test("kapso for_inbox passes decode errors on", function()
	local n, err = normalize.for_inbox("kapso", "not json", EP, H(nil))
	ok(n == nil, "nil")
	ok(type(err) == "string" and #err > 0, "an error string")
end)

---------------------------------------------------------------------------
-- Names, fallbacks and variants on inline bodies
---------------------------------------------------------------------------

-- A v2 body: message object m (JSON), conversation JSON or nil, top-level
-- phone_number_id or nil.
local function v2(m, conv, pnid)
	local parts = { '"message":' .. m }
	if conv then parts[#parts + 1] = '"conversation":' .. conv end
	if pnid then parts[#parts + 1] = '"phone_number_id":"' .. pnid .. '"' end
	return "{" .. table.concat(parts, ",") .. "}"
end
local CONV_JSON = '{"id":"' .. CID .. '","phone_number":"+' .. USER ..
    '","status":"active","phone_number_id":"' .. PNID .. '"}'
local CONV_NAMED = '{"id":"' .. CID .. '","phone_number":"+' .. USER ..
    '","status":"active","kapso":{"contact_name":"' .. NAME .. '"}}'
local TEXT_MSG = '{"id":"wamid.T1","timestamp":"1761670000","type":"text",' ..
    '"text":{"body":"hola"},"kapso":{"direction":"inbound","status":"received",' ..
    '"phone_number_id":"' .. PNID .. '"}}'

test("kapso no event name: kapso.direction inbound is a message", function()
	local evs = decode(v2(TEXT_MSG, CONV_JSON, PNID), ctx(nil), 1)
	eq(evs[1], with(K, {
		kind = "message", phone_number_id = PNID, conversation = CONV,
		type = "text", from = USER, message_id = "wamid.T1",
		timestamp = 1761670000, text = "hola",
	}), "event")
end)

test("kapso event name from body.event", function()
	local body = '{"event":"whatsapp.conversation.ended","conversation":' ..
	    CONV_JSON .. ',"phone_number_id":"' .. PNID .. '"}'
	local evs = decode(body, ctx(nil), 1)
	eq(evs[1].kind, "conversation", "kind")
	eq(evs[1].event, "whatsapp.conversation.ended", "event")
	eq(evs[1].conversation_info.status, "active", "conversation_info")
end)

test("kapso X-Webhook-Event overrides body.event", function()
	local body = '{"event":"whatsapp.conversation.ended","conversation":' ..
	    CONV_JSON .. ',"phone_number_id":"' .. PNID .. '"}'
	local evs = decode(body, ctx("whatsapp.conversation.inactive"), 1)
	eq(evs[1].event, "whatsapp.conversation.inactive", "event")
end)

test("kapso phone_number_id fallbacks", function()
	-- no top-level id: the conversation's
	local evs = decode(v2(TEXT_MSG, CONV_JSON, nil),
	    ctx("whatsapp.message.received"), 1)
	eq(evs[1].phone_number_id, PNID, "from conversation.phone_number_id")
	-- neither: message.kapso.phone_number_id
	evs = decode(v2(TEXT_MSG, CONV_NAMED, nil),
	    ctx("whatsapp.message.received"), 1)
	eq(evs[1], with(K, {
		kind = "message", event = "whatsapp.message.received",
		phone_number_id = PNID, conversation = CONV,
		type = "text", from = USER, name = NAME, message_id = "wamid.T1",
		timestamp = 1761670000, text = "hola",
	}), "event")
	-- the top-level id wins
	evs = decode(v2(TEXT_MSG, CONV_JSON, "111111111111111"),
	    ctx("whatsapp.message.received"), 1)
	eq(evs[1].phone_number_id, "111111111111111", "top level first")
end)

test("kapso received without conversation: from message.from only", function()
	local m = '{"from":"' .. USER .. '","id":"wamid.T2","timestamp":"1761670001",' ..
	    '"type":"text","text":{"body":"x"}}'
	local evs = decode(v2(m, nil, PNID), ctx("whatsapp.message.received"), 1)
	eq(evs[1], with(K, {
		kind = "message", event = "whatsapp.message.received",
		phone_number_id = PNID,
		type = "text", from = USER, message_id = "wamid.T2",
		timestamp = 1761670001, text = "x",
	}), "event")
	-- message.from wins over conversation.phone_number
	m = m:gsub(USER, "447700900123")
	evs = decode(v2(m, CONV_JSON, PNID), ctx("whatsapp.message.received"), 1)
	eq(evs[1].from, "447700900123", "message.from first")
end)

test("kapso media: caption from message_type_data, url from media_data", function()
	local m = '{"id":"wamid.D1","timestamp":"1761670100","type":"document",' ..
	    '"document":{"id":"2233445566778899"},"kapso":{"direction":"inbound",' ..
	    '"has_media":true,"media_data":{"url":"https://api.kapso.ai/m/invoice.pdf",' ..
	    '"filename":"invoice-4821.pdf","content_type":"application/pdf","byte_size":48213},' ..
	    '"message_type_data":{"caption":"Invoice for #4821"}}}'
	local evs = decode(v2(m, CONV_JSON, PNID), ctx("whatsapp.message.received"), 1)
	eq(evs[1], with(K, {
		kind = "message", event = "whatsapp.message.received",
		phone_number_id = PNID, conversation = CONV,
		type = "document", from = USER, message_id = "wamid.D1",
		timestamp = 1761670100, text = "Invoice for #4821",
		media = {
			id = "2233445566778899", caption = "Invoice for #4821",
			url = "https://api.kapso.ai/m/invoice.pdf",
			filename = "invoice-4821.pdf", mime_type = "application/pdf",
		},
	}), "event")
end)

test("kapso media: the media object's own fields come first", function()
	local m = '{"id":"wamid.A1","timestamp":"1761670200","type":"audio",' ..
	    '"audio":{"id":"3344556677889900","mime_type":"audio/ogg; codecs=opus",' ..
	    '"sha256":"wvqXMe6n7n1W0zphvLPoLj+s/NtKqmr3zZ7YzTP7xFI=","voice":true},' ..
	    '"kapso":{"direction":"inbound","has_media":true,' ..
	    '"media_url":"https://api.kapso.ai/m/voice.ogg",' ..
	    '"media_data":{"url":"https://api.kapso.ai/m/other.ogg","filename":"voice.ogg",' ..
	    '"content_type":"audio/ogg"},"transcript":"hello"}}'
	local evs = decode(v2(m, CONV_JSON, PNID), ctx("whatsapp.message.received"), 1)
	eq(evs[1].media, {
		id = "3344556677889900", mime_type = "audio/ogg; codecs=opus",
		sha256 = "wvqXMe6n7n1W0zphvLPoLj+s/NtKqmr3zZ7YzTP7xFI=", voice = true,
		url = "https://api.kapso.ai/m/voice.ogg", filename = "voice.ogg",
	}, "media")
	ok(evs[1].text == nil, "no caption, no text")
end)

test("kapso interactive list_reply and template button", function()
	local m = '{"id":"wamid.L1","timestamp":"1761670300","type":"interactive",' ..
	    '"interactive":{"type":"list_reply","list_reply":{"id":"priority_express",' ..
	    '"title":"Priority Mail Express","description":"Next Day to 2 Days"}}}'
	local evs = decode(v2(m, CONV_JSON, PNID), ctx("whatsapp.message.received"), 1)
	eq(evs[1].text, "Priority Mail Express", "list_reply text")
	eq(evs[1].reply_id, "priority_express", "list_reply reply_id")
	m = '{"id":"wamid.BT1","timestamp":"1761670301","type":"button",' ..
	    '"context":{"from":"' .. BIZ .. '","id":"' .. OUT_MENU .. '"},' ..
	    '"button":{"payload":"TRACK_ORDER","text":"Track my order"}}'
	evs = decode(v2(m, CONV_JSON, PNID), ctx("whatsapp.message.received"), 1)
	eq(evs[1].text, "Track my order", "button text")
	eq(evs[1].reply_id, "TRACK_ORDER", "button reply_id")
	eq(evs[1].context, { from = BIZ, id = OUT_MENU }, "context")
end)

test("kapso failed: message.errors, and the last statuses[] entry with errors", function()
	local E1 = '{"code":131026,"title":"Message undeliverable","message":"Message undeliverable",' ..
	    '"error_data":{"details":"Unable to deliver message."}}'
	local E2 = '{"code":131047,"title":"Re-engagement message",' ..
	    '"message":"Re-engagement message","error_data":{"details":' ..
	    '"Message failed to send because more than 24 hours have passed since the customer last replied to this number."},' ..
	    '"href":"https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}'
	local m = '{"id":"wamid.F1","timestamp":"1761670400","to":"' .. USER .. '",' ..
	    '"type":"text","text":{"body":"hi"},"errors":[' .. E1 .. ']}'
	local evs = decode(v2(m, CONV_JSON, PNID), ctx("whatsapp.message.failed"), 1)
	eq(evs[1], with(K, {
		kind = "status", event = "whatsapp.message.failed",
		phone_number_id = PNID, conversation = CONV,
		status = "failed", recipient = USER, message_id = "wamid.F1",
		timestamp = 1761670400,
		errors = { { code = 131026, title = "Message undeliverable",
		    message = "Message undeliverable",
		    details = "Unable to deliver message." } },
	}), "message.errors")
	m = '{"id":"wamid.F2","timestamp":"1761670401","type":"text",' ..
	    '"kapso":{"direction":"outbound","status":"failed","statuses":[' ..
	    '{"id":"wamid.F2","status":"failed","timestamp":"1761670402","errors":[' .. E1 .. ']},' ..
	    '{"id":"wamid.F2","status":"failed","timestamp":"1761670403","errors":[' .. E2 .. ']},' ..
	    '{"id":"wamid.F2","status":"failed","timestamp":"1761670404"}]}}'
	evs = decode(v2(m, CONV_JSON, PNID), ctx("whatsapp.message.failed"), 1)
	eq(evs[1].errors, { {
		code = 131047, title = "Re-engagement message",
		message = "Re-engagement message",
		details = "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
		href = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
	} }, "last statuses[] entry with errors")
	eq(evs[1].recipient, USER, "recipient from conversation.phone_number")
end)

test("kapso other events are unknown, with their name", function()
	local evs, raws = decode('{"phone_number_id":"' .. PNID .. '"}',
	    ctx("whatsapp.phone_number.deleted"), 1)
	eq(evs[1], with(K, { kind = "unknown",
	    event = "whatsapp.phone_number.deleted", phone_number_id = PNID }), "event")
	eq(raws[1].phone_number_id, PNID, "raw")
	-- a message event whose body has no message
	evs = decode('{"conversation":' .. CONV_JSON .. '}',
	    ctx("whatsapp.message.received"), 1)
	eq(evs[1], with(K, { kind = "unknown", event = "whatsapp.message.received",
	    phone_number_id = PNID, conversation = CONV }), "no message")
	-- nothing to go on
	evs = decode('{"hello":"world"}', { endpoint = EP }, 1)
	eq(evs[1], with(K, { kind = "unknown" }), "no name")
end)

-- Nothing authenticated is silently dropped (README, HTTP answers): the
-- Meta provider gives such a body one unknown event, and so must a Kapso
-- forward of it.
test("kapso Meta forward with nothing in it is one unknown event", function()
	for _, body in ipairs({
		'{"object":"whatsapp_business_account","entry":[]}',
		'{"object":"whatsapp_business_account","entry":[{"id":"318492710563284","changes":[]}]}',
	}) do
		local evs, raws = decode(body, ctx(nil), 1, body)
		eq(evs[1], with(K, { kind = "unknown" }), "event")
		eq(raws[1].object, "whatsapp_business_account", "raw is the whole body")
	end
end)

test("kapso Meta forward of another change field is unknown", function()
	local body = '{"object":"whatsapp_business_account","entry":[{"id":"318492710563284",' ..
	    '"changes":[{"field":"message_template_status_update","value":{"event":"APPROVED",' ..
	    '"message_template_id":594425479261596,"message_template_name":"order_shipped",' ..
	    '"message_template_language":"en_US","reason":"NONE"}}]}]}'
	local evs, raws = decode(body, ctx(nil), 1)
	eq(evs[1], with(K, { kind = "unknown" }), "event")
	eq(raws[1].field, "message_template_status_update", "raw is the change")
end)

---------------------------------------------------------------------------
-- Rejected bodies
---------------------------------------------------------------------------

local function rejects(body, what)
	local evs, err = normalize.decode("kapso", body, ctx("whatsapp.message.received"))
	ok(evs == nil, what .. ": no events")
	ok(type(err) == "string" and #err > 0, what .. ": an error string")
end

test("kapso: not JSON is rejected", function()
	rejects("this is not json", "plain text")
	rejects('{"message": {"id": "wamid.X"', "truncated object")
	rejects('{"type":"whatsapp.message.received","batch":true,"data":[],}', "trailing comma")
	rejects("", "empty body")
end)

test("kapso: a JSON value that is not an object is rejected", function()
	rejects("[]", "empty array")
	rejects('[{"message":{"id":"wamid.X"}}]', "array of items")
	rejects('"whatsapp.message.received"', "string")
	rejects("null", "null")
end)
