-- test_normalize.lua - field-by-field expectations for walua.normalize.
--
-- One test per fixture under tests/fixtures/insider/ (Insider One's payload
-- shapes, a_ to i_ as the file names say) and tests/fixtures/meta/ (Meta's
-- message, status and error objects), plus the decoder's rejections (not
-- JSON, not an object, nested deeper than 64).  Each event is
-- compared whole, without `raw`; `raw` is checked by a few fields only,
-- because JSON numbers inside it may be floats.  Uses the globals of
-- testlib.lua; the runner calls T.finish().

local loaded, normalize = pcall(require, "walua.normalize")
if not loaded then
	test("require walua.normalize", function() error(normalize, 0) end)
	return
end

local INSIDER_EP = "/webhooks/insider"
local META_EP = "/webhooks/meta"

-- Decode fixture `name` for `provider`, check that it gives exactly n
-- events, and return the events with `raw` taken off, and the raws.
local function events(provider, name, n, endpoint)
	endpoint = endpoint or (provider == "meta" and META_EP or INSIDER_EP)
	local evs, err = normalize.decode(provider, fixture(name),
	    { endpoint = endpoint })
	if evs == nil then
		error(name .. ": decode returned nil, " .. tostring(err), 2)
	end
	ok(type(evs) == "table", name .. ": decode returns a table")
	eq(#evs, n, name .. ": number of events")
	local raws = {}
	for i = 1, n do
		local ev = evs[i]
		ok(type(ev) == "table", name .. ": event " .. i .. " is a table")
		ok(type(ev.raw) == "table", name .. ": event " .. i .. " has raw")
		raws[i] = ev.raw
		ev.raw = nil
	end
	return evs, raws
end

-- Same, for a body given inline.
local function events_of(provider, body, n, endpoint)
	endpoint = endpoint or (provider == "meta" and META_EP or INSIDER_EP)
	local evs, err = normalize.decode(provider, body, { endpoint = endpoint })
	if evs == nil then
		error("decode returned nil, " .. tostring(err), 2)
	end
	eq(#evs, n, "number of events")
	local raws = {}
	for i = 1, n do
		raws[i] = evs[i].raw
		ok(type(raws[i]) == "table", "event " .. i .. " has raw")
		evs[i].raw = nil
	end
	return evs, raws
end

-- A copy of base with the fields of extra added.
local function with(base, extra)
	local t = {}
	for k, v in pairs(base) do t[k] = v end
	for k, v in pairs(extra or {}) do t[k] = v end
	return t
end

---------------------------------------------------------------------------
-- Insider One: the payload shapes it delivers
---------------------------------------------------------------------------

local IPN = "113344556677889"		-- metadata.phone_number_id
local IDN = "908502223344"		-- metadata.display_phone_number
local U1 = "905321234567"
local U2 = "905551112233"
local U3 = "393336188770"
local KEY1 = "whatsapp-660e8400-e29b-41d4-a716-446655440001"
local KEY2 = "whatsapp-660e8400-e29b-41d4-a716-446655440002"
local KEY3 = "whatsapp-660e8400-e29b-41d4-a716-446655440003"
local KEY4 = "whatsapp-660e8400-e29b-41d4-a716-446655440004"
local KEY5 = "whatsapp-660e8400-e29b-41d4-a716-446655440005"
local KEY6 = "whatsapp-660e8400-e29b-41d4-a716-446655440006"
local KEY7 = "whatsapp-660e8400-e29b-41d4-a716-446655440007"
local OUT1 = "wamid.HBgMOTA1MzIxMjM0NTY3FQIAERgSOUJEQUIzNkFCRDQwMDJBNUJBAA=="
local OUT2 = "wamid.HBgMOTA1NTUxMTEyMjMzFQIAERgSOTNDM0JCRUZGQkE5RjgxMkI0AA=="
local IN1 = "wamid.HBgMOTA1MzIxMjM0NTY3FQIAEhggODc0NzM2MjFCOTY1NEIxRkVBRDFBMDJFRTY4MDRFRTIA"
local IN2 = "wamid.HBgMOTA1MzIxMjM0NTY3FQIAEhggN0EzQjJEQUY4NDg2MUYxRkU1MTVEN0NDQkQxOTUwM0MA"
local IN_BTN = "wamid.HBgMOTA1MzIxMjM0NTY3FQIAEhggRDRGNUMyQzk0ODgxQjhEQjI3RjgzQkUxNzAzQkZCRUYA"

local I = { provider = "insider", endpoint = INSIDER_EP }

-- Fields common to every event of an Insider Meta-envelope body.
local IENV = with(I, { phone_number_id = IPN, display_phone_number = IDN })

test("insider (a) accepted", function()
	local evs, raws = events("insider", "insider/a_accepted.json", 1)
	eq(evs[1], with(I, {
		kind = "accepted", key = KEY1,
		conversation = U1,
		message_id = OUT1, recipient = U1, input = "+905321234567",
	}), "event")
	eq(raws[1].messaging_product, "whatsapp", "raw is the whole body")
	eq(raws[1].key, KEY1, "raw.key")
	eq(raws[1].messages[1].id, OUT1, "raw.messages[1].id")
end)

test("insider (b) error, Cloud API form", function()
	local evs, raws = events("insider", "insider/b_error_cloud.json", 1)
	eq(evs[1], with(I, {
		kind = "error", key = KEY2,
		code = 130429,
		errors = { {
			code = 130429,
			message = "(#130429) Rate limit hit",
			details = "Cloud API message throughput reached.",
		} },
	}), "event")
	eq(raws[1].key, KEY2, "raw is the whole body")
	eq(raws[1].error.fbtrace_id, "AkVd3qX9Lr2mT7bN0yPcZs1", "raw.error.fbtrace_id")
	eq(raws[1].error.type, "OAuthException", "raw.error.type")
end)

test("insider (b) error, Cloud API minimal form", function()
	local evs, raws = events("insider", "insider/b_error_cloud_min.json", 1)
	eq(evs[1], with(I, {
		kind = "error", key = KEY3,
		code = 131005,
		errors = { { code = 131005, message = "Access denied" } },
	}), "event")
	eq(raws[1].key, KEY3, "raw is the whole body")
	eq(raws[1].error.message, "Access denied", "raw.error.message")
end)

test("insider (c) error, On-Premise form", function()
	local evs, raws = events("insider", "insider/c_error_onprem.json", 1)
	eq(evs[1], with(I, {
		kind = "error",
		code = 429,
		errors = { {
			code = 429,
			title = "Rate limit exceeded",
			details = "Too many requests in a given amount of time",
		} },
	}), "event")
	eq(raws[1].errors[1].title, "Rate limit exceeded", "raw is the whole body")
end)

local function insider_status(file, status, ts)
	local evs, raws = events("insider", file, 1)
	eq(evs[1], with(IENV, {
		kind = "status", key = KEY1,
		conversation = IPN .. ":" .. U1,
		timestamp = ts,
		status = status, message_id = OUT1, recipient = U1,
	}), "event")
	eq(raws[1].id, OUT1, "raw is the status object")
	eq(raws[1].status, status, "raw.status")
	eq(raws[1].recipient_id, U1, "raw.recipient_id")
end

test("insider (d) status sent", function()
	insider_status("insider/d_status_sent.json", "sent", 1761661502)
end)

test("insider (d) status delivered", function()
	insider_status("insider/d_status_delivered.json", "delivered", 1761661504)
end)

test("insider (d) status read", function()
	insider_status("insider/d_status_read.json", "read", 1761661590)
end)

test("insider (d) metadata.display_phone_number_id", function()
	insider_status("insider/d_status_display_phone_number_id.json",
	    "delivered", 1761661504)
end)

test("insider (e) status failed", function()
	local evs, raws = events("insider", "insider/e_status_failed.json", 1)
	eq(evs[1], with(IENV, {
		kind = "status", key = KEY4,
		conversation = IPN .. ":" .. U2,
		timestamp = 1761662000,
		status = "failed", message_id = OUT2, recipient = U2,
		errors = { {
			code = 131047,
			title = "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
			href = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
		} },
	}), "event")
	eq(raws[1].id, OUT2, "raw is the status object")
	eq(raws[1].status, "failed", "raw.status")
end)

-- The text reply of (f), with or without a key.
local function insider_text(key)
	return with(IENV, {
		kind = "message", key = key,
		conversation = IPN .. ":" .. U1,
		timestamp = 1761661601,
		type = "text", from = U1, name = "Mehmet Demir",
		message_id = IN1,
		text = "Merhaba, kargom ne zaman gelir?",
	})
end

test("insider (f) reply text", function()
	local evs, raws = events("insider", "insider/f_reply_text.json", 1)
	eq(evs[1], insider_text(KEY5), "event")
	eq(raws[1].id, IN1, "raw is the message object")
	eq(raws[1].text.body, "Merhaba, kargom ne zaman gelir?", "raw.text.body")
end)

test("insider (f) reply text, key \"\" is absent", function()
	local evs, raws = events("insider", "insider/f_reply_text_empty_key.json", 1)
	eq(evs[1], insider_text(nil), "event")
	eq(raws[1].id, IN1, "raw is the message object")
end)

test("insider (f) reply text, no key", function()
	local evs, raws = events("insider", "insider/f_reply_text_no_key.json", 1)
	eq(evs[1], insider_text(nil), "event")
	eq(raws[1].id, IN1, "raw is the message object")
end)

local NONASCII_TEXT = "Sipari\u{15F}im nerede? \u{1F4E6}"	-- "Siparişim nerede? 📦"
local NONASCII_NAME = "Ay\u{15F}e Y\u{131}lmaz"		-- "Ayşe Yılmaz"

local function insider_nonascii(file)
	local evs, raws = events("insider", file, 1)
	eq(evs[1], with(IENV, {
		kind = "message", key = KEY6,
		conversation = IPN .. ":" .. U1,
		timestamp = 1761661700,
		type = "text", from = U1, name = NONASCII_NAME,
		message_id = IN2,
		text = NONASCII_TEXT,
	}), "event")
	eq(#evs[1].text, 23, "text is UTF-8 bytes")
	eq(raws[1].id, IN2, "raw is the message object")
end

test("insider (f) reply text, raw UTF-8", function()
	insider_nonascii("insider/f_reply_text_nonascii.json")
end)

test("insider (f) reply text, \\uXXXX escapes and a surrogate pair", function()
	insider_nonascii("insider/f_reply_text_nonascii_escaped.json")
end)

local function insider_media(file, mtype, mid, ts, media, from, name)
	from = from or U1
	local evs, raws = events("insider", file, 1)
	eq(evs[1], with(IENV, {
		kind = "message",
		conversation = IPN .. ":" .. from,
		timestamp = ts,
		type = mtype, from = from, name = name or "Mehmet Demir",
		message_id = mid,
		media = media,
	}), "event")
	eq(raws[1].id, mid, "raw is the message object")
	eq(raws[1].type, mtype, "raw.type")
end

test("insider (g) media sticker", function()
	insider_media("insider/g_media_sticker.json", "sticker",
	    "wamid.HBgMMzkzMzM2MTg4NzcwFQIAEhggNjI3RkNEQjZDQzlBNUUxNkQ2NTdDQTZDREVGMEE2QkIA",
	    1678889298, {
		mime_type = "image/webp",
		sha256 = "V8SxOkxzNecvFmngUG6ZII3x2gUMEl2meLI+u1W/TGE=",
		id = "1234567890123456",
		animated = true,
	    }, U3, "Giulia Rossi")
end)

test("insider (g) media video", function()
	insider_media("insider/g_media_video.json", "video",
	    "wamid.HBgMOTA1MzIxMjM0NTY3FQIAEhggMzVCMzZCMjg5MTZEMzhCMzRBQkRERjgzMkUyODYxMjYA",
	    1761661801, {
		mime_type = "video/mp4",
		sha256 = "DKsclhdAT68rJOIh4YnKWUWBPhTT92Y0WwnKE7vij/w=",
		id = "2345678901234567",
	    })
end)

test("insider (g) media image", function()
	insider_media("insider/g_media_image.json", "image",
	    "wamid.HBgMOTA1MzIxMjM0NTY3FQIAEhggNzNCRUJDRTM5NUI2RjFFRkVEQ0Y2ODQyRkJEQjRENzYA",
	    1761661802, {
		mime_type = "image/jpeg",
		sha256 = "YQXWzHavQAMl6U1YjOURvlv9u3O0N9xR7KQ5F9ekPj0=",
		id = "3456789012345678",
	    })
end)

test("insider (g) media document", function()
	insider_media("insider/g_media_document.json", "document",
	    "wamid.HBgMOTA1MzIxMjM0NTY3FQIAEhggRDQ1NzlCMjY4OEQ2NzUyMzVGNDAyRjZCNEI0M0JDQkYA",
	    1761661803, {
		filename = "doc.pdf",
		mime_type = "application/pdf",
		sha256 = "Q8wj+lK4e0zB0CtbEUFUFR1q3dsXyf3cBrAn+pniQAg=",
		id = "4567890123456789",
	    })
end)

test("insider (h) quick-reply button", function()
	local evs, raws = events("insider", "insider/h_button.json", 1)
	eq(evs[1], with(IENV, {
		kind = "message", key = KEY1,
		conversation = IPN .. ":" .. U1,
		timestamp = 1761661900,
		type = "button", from = U1, name = "Mehmet Demir",
		message_id = IN_BTN,
		text = "Sipari\u{15F}im nerede?",
		reply_id = "ORDER_STATUS",
		context = { from = IDN, id = OUT1 },
	}), "event")
	eq(raws[1].id, IN_BTN, "raw is the message object")
	eq(raws[1].button.payload, "ORDER_STATUS", "raw.button.payload")
end)

local TEMPLATE_COMPONENTS = {
	{
		index = "",
		parameters = { {
			type = "video",
			video = { link = "https://image.useinsider.com/acme/whatsapp/7f3a9c2e/launch.mp4?utm_source=insider&utm_medium=whatsapp_business_api&utm_campaign=autumn_launch" },
		} },
		sub_type = "", type = "header",
	},
	{ index = "", parameters = {}, sub_type = "", type = "body" },
	{
		index = "0",
		parameters = { {
			text = "?utm_source=insider&utm_medium=whatsapp_business_api&utm_campaign=autumn_launch&isIns=1&msKey=D9BFn64184zDy4T",
			type = "text",
		} },
		sub_type = "url", type = "button",
	},
}
local TEMPLATE_CONTENT = "Hi, this is a test message! Say welcome new media type, yay!"

test("insider (i) template sent", function()
	local evs, raws = events("insider", "insider/i_template.json", 1)
	eq(evs[1], with(I, {
		kind = "template", key = KEY7,
		conversation = U1,
		timestamp = 1761661501,		-- 2025-10-28T14:25:01Z
		recipient = U1,
		template = {
			name = "autumn_launch_video",
			language = { code = "en", policy = "deterministic" },
			content = TEMPLATE_CONTENT,
			components = TEMPLATE_COMPONENTS,
		},
	}), "event")
	eq(raws[1].recipient_type, "individual", "raw is the whole body")
	eq(raws[1].to, U1, "raw.to")
	eq(raws[1].template.name, "autumn_launch_video", "raw.template.name")
end)

-- (i) variants: the timestamp as a number, a numeric string, at the template
-- level; content at the top level.
local function template_body(top, tpl)
	return '{"messaging_product":"whatsapp","recipient_type":"individual",' ..
	    '"to":"' .. U1 .. '","type":"template",' .. top ..
	    '"template":{"name":"order_shipped","language":{"code":"tr"},' ..
	    '"components":[]' .. tpl .. '}}'
end

local function template_event(ts, content)
	return with(I, {
		kind = "template",
		conversation = U1,
		timestamp = ts,
		recipient = U1,
		template = {
			name = "order_shipped",
			language = { code = "tr" },
			content = content,
			components = {},
		},
	})
end

test("insider (i) template, timestamp as a number", function()
	local evs = events_of("insider", template_body(
	    '"timestamp":1761661501,', ',"content":"Kargon yolda"'), 1)
	eq(evs[1], template_event(1761661501, "Kargon yolda"), "event")
end)

test("insider (i) template, timestamp as a numeric string", function()
	local evs = events_of("insider", template_body(
	    '"timestamp":"1761661501",', ',"content":"Kargon yolda"'), 1)
	eq(evs[1], template_event(1761661501, "Kargon yolda"), "event")
end)

test("insider (i) template, timestamp and content elsewhere", function()
	-- timestamp inside template, content at the top level
	local evs = events_of("insider", template_body(
	    '"content":"Kargon yolda",', ',"timestamp":"2025-10-28T14:25:01Z"'), 1)
	eq(evs[1], template_event(1761661501, "Kargon yolda"), "event")
end)

test("insider unknown object", function()
	local evs, raws = events("insider", "insider/unknown_object.json", 1)
	eq(evs[1], with(I, { kind = "unknown" }), "event")
	eq(raws[1].foo, "bar", "raw is the whole body")
	ok(raws[1].n == 1, "raw.n")
end)

test("insider object nested 40 deep is an unknown event", function()
	local body = string.rep('{"a":', 40) .. "1" .. string.rep("}", 40)
	local evs, raws = events_of("insider", body, 1)
	eq(evs[1], with(I, { kind = "unknown" }), "event")
	ok(type(raws[1].a) == "table", "raw is the whole body")
end)

---------------------------------------------------------------------------
-- Meta envelope: messages, statuses and errors
---------------------------------------------------------------------------

local MPN = "106540352242922"
local MDN = "15550783881"
local M1 = "16505551234"
local MCONV = MPN .. ":" .. M1
local MOUT = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBIzNUZBMzM3RkM3MzFCNUVEQzAA"
local LOOK = "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=%s&ext=1749416383&hash=ATtJ5kVZr3Wc0b6uHqPz"

local M = { provider = "meta", endpoint = META_EP }
local MENV = with(M, { phone_number_id = MPN, display_phone_number = MDN })

-- An inbound message from M1 ("Kerry Fisher") to MPN.
local function mmsg(extra)
	return with(with(MENV, {
		kind = "message", conversation = MCONV,
		from = M1, name = "Kerry Fisher",
	}), extra)
end

-- Decode a single-message Meta fixture and compare it.
local function meta_message(file, mid, want)
	local evs, raws = events("meta", file, 1)
	want.message_id = mid
	eq(evs[1], mmsg(want), "event")
	eq(raws[1].id, mid, "raw is the message object")
	eq(raws[1].type, want.type, "raw.type")
	return raws[1]
end

test("meta text", function()
	meta_message("meta/text.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCBGNzI2Mzk4NjQyN0YyRUUwOTBGREE1NjM3NkNBRkU5OAA=", {
		type = "text", timestamp = 1749416383,
		text = "Does it come in another color?",
	})
end)

test("meta image with caption and url", function()
	meta_message("meta/image.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCBGRjA3N0U3RUI4NTA1MzVBNDE1N0E5RUNFMjZCNjEzNgA=", {
		type = "image", timestamp = 1749416384,
		text = "This is the damaged box",
		media = {
			caption = "This is the damaged box",
			mime_type = "image/jpeg",
			sha256 = "sPoEfzx67LOd4GU2nQk5pQfxSY3lYiTB5yxiJTBLsjM=",
			id = "1908647269898587",
			url = LOOK:format("1908647269898587"),
		},
	})
end)

test("meta video", function()
	meta_message("meta/video.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCAzMTYwQjUxMjkyRDkzREE5MTIxQjdEQUQ3ODI1N0E3MgA=", {
		type = "video", timestamp = 1749416385,
		media = {
			mime_type = "video/mp4",
			sha256 = "3CxWZeBchaAWp1RRF0nxRiwaMrqvwDnN7D+b4ZtXJok=",
			id = "1908647269898588",
			url = LOOK:format("1908647269898588"),
		},
	})
end)

test("meta audio, voice", function()
	meta_message("meta/audio.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCBCMDA2OTJCM0FGNzYyQTUwMDk0RkJGN0UyRTA1N0JBOQA=", {
		type = "audio", timestamp = 1749416386,
		media = {
			mime_type = "audio/ogg; codecs=opus",
			sha256 = "wvqXMe6n7n1W0zphvLPoLj+s/NtKqmr3zZ7YzTP7xFI=",
			id = "1908647269898589",
			url = LOOK:format("1908647269898589"),
			voice = true,
		},
	})
end)

test("meta document with filename and caption", function()
	meta_message("meta/document.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCBGMDg1MUQyN0I4NkE1ODkwMTFGREU4RjJFMjEyN0E5MgA=", {
		type = "document", timestamp = 1749416387,
		text = "Invoice for October",
		media = {
			caption = "Invoice for October",
			filename = "invoice-2025-10.pdf",
			mime_type = "application/pdf",
			sha256 = "qCgyyHj82XRCEd3fzqS6ajn4z/xIOV8+NzmaM10b7I0=",
			id = "1908647269898590",
			url = LOOK:format("1908647269898590"),
		},
	})
end)

test("meta sticker, animated", function()
	meta_message("meta/sticker.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCA4NjhBNzM1NDQ1RTVEQUM0RTg2OTVDRDlFNTVFNDA2RgA=", {
		type = "sticker", timestamp = 1749416388,
		media = {
			mime_type = "image/webp",
			sha256 = "IBzZvGEvFKTR07P/QwL0UO4jYJjRlyQiqidKPzUx3B0=",
			id = "1908647269898591",
			url = LOOK:format("1908647269898591"),
			animated = true,
		},
	})
end)

test("meta location", function()
	meta_message("meta/location.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCBENkVFM0YxNkI4ODM3MTYzOUU2QzIxQTVBQTI0NkEzQQA=", {
		type = "location", timestamp = 1749416389,
		location = {
			address = "101 Forest Ave, Palo Alto, CA 94301",
			latitude = 37.44221496582,
			longitude = -122.16165924072,
			name = "Philz Coffee",
			url = "https://philzcoffee.com/",
		},
	})
end)

test("meta contacts (shared vCard, sender still paired)", function()
	local raw = meta_message("meta/contacts.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCBDODU3RUNDMjkxQkI4NTRERjQyNUIyRDUwQUZEMDk3MgA=", {
		type = "contacts", timestamp = 1749416390,
	})
	eq(raw.contacts[1].name.formatted_name, "Barbara J. Johnson",
	    "raw.contacts[1].name.formatted_name")
end)

test("meta button", function()
	meta_message("meta/button.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCA5ODRFMzg2RjNCQkIzMkRCNjUzNzk0NEFFMERCMEExQgA=", {
		type = "button", timestamp = 1749416391,
		text = "Unsubscribe", reply_id = "Unsubscribe",
		context = { from = MDN, id = MOUT },
	})
end)

test("meta interactive button_reply", function()
	meta_message("meta/interactive_button_reply.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCAxRkY3ODAxRjU5NjE3QjRGNDY1NkY3N0VFRDlEMTlDOAA=", {
		type = "interactive", timestamp = 1749416392,
		text = "Change", reply_id = "change-button",
		context = { from = MDN, id = MOUT },
	})
end)

test("meta interactive list_reply", function()
	meta_message("meta/interactive_list_reply.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCA1MTAwMjgwRDJCNkIzMTVCQkZEMzg2MDNDNTkxNkQxQQA=", {
		type = "interactive", timestamp = 1749416393,
		text = "Priority Mail Express", reply_id = "priority_express",
		context = { from = MDN, id = MOUT },
	})
end)

test("meta interactive nfm_reply (no text, no reply_id)", function()
	local raw = meta_message("meta/interactive_nfm_reply.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCA3QjY4RkNBQ0QyRjVGQURENUZFODgyNkYyMTYzQkE3MwA=", {
		type = "interactive", timestamp = 1749416394,
		context = { from = MDN, id = MOUT },
	})
	eq(type(raw.interactive.nfm_reply.response_json), "string",
	    "response_json stays a JSON string")
end)

test("meta reaction", function()
	meta_message("meta/reaction.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCBFMUE0REEzMTI4NzI1QTI2Q0VERTUyRTk3QUZBNTFDRQA=", {
		type = "reaction", timestamp = 1749416395,
		reaction = { message_id = MOUT, emoji = "\u{1F600}" },
	})
end)

test("meta order (no text)", function()
	local raw = meta_message("meta/order.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCBEMjI2OTRDNUFFNDNBQTZDQ0Q3QkU4NkVGQUFGMjIzMAA=", {
		type = "order", timestamp = 1749416396,
	})
	eq(raw.order.catalog_id, "194836987003835", "raw.order.catalog_id")
end)

test("meta system, no contacts", function()
	local evs, raws = events("meta", "meta/system.json", 1)
	local mid = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCA3N0Q3NDdBQjBFOTIxOTlFQjkzQzU1OEZCQjZGREVERAA="
	eq(evs[1], with(MENV, {
		kind = "message", conversation = MCONV,
		timestamp = 1749416397,
		type = "system", from = M1,
		message_id = mid,
	}), "event")
	eq(raws[1].id, mid, "raw is the message object")
	eq(raws[1].system.type, "user_changed_number", "raw.system.type")
end)

test("meta unsupported with errors", function()
	meta_message("meta/unsupported.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCAzQ0IzMThGQjQzMTYwMzk3M0REQTIxNDA3RTQ2NEVGOAA=", {
		type = "unsupported", timestamp = 1749416398,
		errors = { {
			code = 131051,
			title = "Message type unknown",
			message = "Message type unknown",
			details = "Message type is currently not supported.",
		} },
	})
end)

test("meta type unknown is a message", function()
	meta_message("meta/unknown.json",
	    "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCAzMjY2NzlCNDJCOTVBRjZCRDNDNUI5MjQ3MkYyOUFDMAA=", {
		type = "unknown", timestamp = 1749416399,
		errors = { {
			code = 131051,
			title = "Message type unknown",
			message = "Message type unknown",
			details = "Message type is not currently supported",
		} },
	})
end)

-- A single-status Meta fixture.
local function meta_status(file, want)
	local evs, raws = events("meta", file, 1)
	eq(evs[1], with(with(MENV, {
		kind = "status", conversation = MCONV, recipient = M1,
	}), want), "event")
	eq(raws[1].id, want.message_id, "raw is the status object")
	eq(raws[1].status, want.status, "raw.status")
	return raws[1]
end

test("meta status sent with conversation and pricing", function()
	local raw = meta_status("meta/status_sent.json", {
		status = "sent", message_id = MOUT, timestamp = 1750030073,
		pricing = {
			billable = true, pricing_model = "PMP",
			type = "regular", category = "marketing",
		},
	})
	eq(raw.conversation.id, "72b14d6bd5407799e66f64d1b338e567",
	    "raw.conversation.id")
end)

test("meta status delivered", function()
	meta_status("meta/status_delivered.json", {
		status = "delivered", message_id = MOUT, timestamp = 1750030075,
	})
end)

test("meta status read", function()
	meta_status("meta/status_read.json", {
		status = "read", message_id = MOUT, timestamp = 1750030142,
	})
end)

test("meta status failed with errors", function()
	meta_status("meta/status_failed.json", {
		status = "failed",
		message_id = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI0MTQyRUI4ODEyN0VGOTU4MjEA",
		timestamp = 1751142888,
		errors = { {
			code = 131049,
			title = "This message was not delivered to maintain healthy ecosystem engagement.",
			message = "This message was not delivered to maintain healthy ecosystem engagement.",
			details = "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
			href = "/documentation/business-messaging/whatsapp/support/error-codes",
		} },
	})
end)

test("meta status played", function()
	meta_status("meta/status_played.json", {
		status = "played",
		message_id = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJGOEY2OUQ3REUzRURBNEI3NjEA",
		timestamp = 1751143000,
	})
end)

test("meta value.errors: one event, all errors, first code", function()
	local evs, raws = events("meta", "meta/value_errors.json", 1)
	eq(evs[1], with(MENV, {
		kind = "error",
		code = 130429,
		errors = { {
			code = 130429,
			title = "Rate limit hit",
			message = "Rate limit hit",
			details = "Message failed to send because there were too many messages sent from this phone number in a short period of time",
			href = "/documentation/business-messaging/whatsapp/support/error-codes",
		}, {
			code = 131056,
			title = "(Business Account, Consumer Account) pair rate limit hit",
			message = "(Business Account, Consumer Account) pair rate limit hit",
			details = "Too many messages sent from the sender phone number to the same recipient phone number in a short period of time.",
			href = "/documentation/business-messaging/whatsapp/support/error-codes",
		} },
	}), "event")
	eq(raws[1].messaging_product, "whatsapp", "raw is the value object")
	eq(raws[1].metadata.phone_number_id, MPN, "raw.metadata.phone_number_id")
	eq(raws[1].errors[1].title, "Rate limit hit", "raw.errors[1].title")
end)

test("meta multi: 2 entries x 2 messages, in body order", function()
	local evs, raws = events("meta", "meta/multi.json", 4)
	local PN2, DN2 = "117788990011223", "15550783882"
	local A = with(M, { kind = "message",
	    phone_number_id = MPN, display_phone_number = MDN })
	local B = with(M, { kind = "message",
	    phone_number_id = PN2, display_phone_number = DN2 })
	local want = {
		with(A, {
			conversation = MPN .. ":16505551234",
			timestamp = 1749416500,
			type = "text", from = "16505551234", name = "Kerry Fisher",
			message_id = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGCBFNkEwMThCRUMxNkVBOUEyNzQ4MjdBRUNDQkVGMUY2NAA=",
			text = "Hi",
		}),
		with(A, {
			conversation = MPN .. ":14155550123",
			timestamp = 1749416501,
			type = "image", from = "14155550123", name = "Sam Lee",
			message_id = "wamid.HBgLMTQxNTU1NTAxMjMVAgASGCBDMUYyMjkxRUE5REM5REE3OTQxN0Y3RENFQkVFOTU0RAA=",
			media = {
				mime_type = "image/jpeg",
				sha256 = "niIReiA5yrBi7fXVCjgjwrJ1Nkyh+gDNkBpqQnyhVvw=",
				id = "1908647269898600",
			},
		}),
		with(B, {
			conversation = PN2 .. ":447700900123",
			timestamp = 1749416502,
			type = "text", from = "447700900123", name = "Oliver Smith",
			message_id = "wamid.HBgMNDQ3NzAwOTAwMTIzFQIAEhggOTdFNUFENzY3NTBCMjZDNTcxNDg1QjlDNjQ2NzA5MTkA",
			text = "Hello there",
		}),
		with(B, {
			conversation = PN2 .. ":4915112345678",
			timestamp = 1749416503,
			type = "button", from = "4915112345678", name = "Lena Schmidt",
			message_id = "wamid.HBgNNDkxNTExMjM0NTY3OBUCABIYIDFBODg1QjUxNzI5OTc3MTc5NDUxQjNCRDUzN0YxMUUzAA==",
			text = "Stop promotions", reply_id = "STOP",
		}),
	}
	for i = 1, 4 do
		eq(evs[i], want[i], "event " .. i)
		eq(raws[i].id, want[i].message_id, "raw " .. i .. " is the message object")
	end
end)

test("meta change field other than messages is unknown", function()
	local evs, raws = events("meta", "meta/other_field.json", 1)
	eq(evs[1], with(M, { kind = "unknown" }), "event")
	eq(raws[1].field, "message_template_status_update", "raw is the change object")
	eq(raws[1].value.event, "APPROVED", "raw.value.event")
end)

test("meta other field with metadata gives the business number", function()
	local body = '{"object":"whatsapp_business_account","entry":[{"id":"102290129340398",' ..
	    '"changes":[{"field":"smb_message_echoes","value":{"messaging_product":"whatsapp",' ..
	    '"metadata":{"display_phone_number":"' .. MDN .. '","phone_number_id":"' .. MPN .. '"},' ..
	    '"message_echoes":[{"from":"' .. MDN .. '","to":"' .. M1 .. '","id":"wamid.ECHO1",' ..
	    '"timestamp":"1749416600","type":"text","text":{"body":"Thanks!"}}]}}]}]}'
	local evs, raws = events_of("meta", body, 1)
	eq(evs[1], with(MENV, { kind = "unknown" }), "event")
	eq(raws[1].field, "smb_message_echoes", "raw is the change object")
end)

test("meta name falls back to the only contact", function()
	-- wa_id and from differ (as for some Brazilian numbers): one contact
	local body = '{"object":"whatsapp_business_account","entry":[{"id":"102290129340398",' ..
	    '"changes":[{"field":"messages","value":{"messaging_product":"whatsapp",' ..
	    '"metadata":{"display_phone_number":"' .. MDN .. '","phone_number_id":"' .. MPN .. '"},' ..
	    '"contacts":[{"profile":{"name":"Jo\\u00e3o Silva"},"wa_id":"5511987654321"}],' ..
	    '"messages":[{"from":"551187654321","id":"wamid.BR1","timestamp":"1749416700",' ..
	    '"type":"text","text":{"body":"Oi"}}]}}]}]}'
	local evs = events_of("meta", body, 1)
	eq(evs[1], with(MENV, {
		kind = "message", conversation = MPN .. ":551187654321",
		timestamp = 1749416700,
		type = "text", from = "551187654321", name = "Jo\u{E3}o Silva",
		message_id = "wamid.BR1", text = "Oi",
	}), "event")
end)

test("meta context keeps only from and id", function()
	local body = '{"object":"whatsapp_business_account","entry":[{"id":"102290129340398",' ..
	    '"changes":[{"field":"messages","value":{"messaging_product":"whatsapp",' ..
	    '"metadata":{"display_phone_number":"' .. MDN .. '","phone_number_id":"' .. MPN .. '"},' ..
	    '"contacts":[{"profile":{"name":"Kerry Fisher"},"wa_id":"' .. M1 .. '"}],' ..
	    '"messages":[{"context":{"from":"' .. MDN .. '","id":"' .. MOUT .. '",' ..
	    '"referred_product":{"catalog_id":"194836987003835","product_retailer_id":"di9ozbzfi4"}},' ..
	    '"from":"' .. M1 .. '","id":"wamid.PQ1","timestamp":"1749416800",' ..
	    '"type":"text","text":{"body":"Is this in stock?"}}]}}]}]}'
	local evs, raws = events_of("meta", body, 1)
	eq(evs[1], mmsg({
		timestamp = 1749416800, type = "text", message_id = "wamid.PQ1",
		text = "Is this in stock?",
		context = { from = MDN, id = MOUT },
	}), "event")
	eq(raws[1].context.referred_product.product_retailer_id, "di9ozbzfi4",
	    "raw keeps the whole context")
end)

test("a contact that is not an object is no name, not an error", function()
	for _, c in ipairs({ "5", "true", '"x"', "null" }) do
		local body = '{"object":"whatsapp_business_account","entry":[{' ..
		    '"changes":[{"field":"messages","value":{"contacts":[' .. c ..
		    '],"messages":[{"from":"' .. M1 .. '","id":"wamid.C1",' ..
		    '"type":"text","text":{"body":"hi"}}]}}]}]}'
		local evs, err = normalize.decode("meta", body, {})
		ok(evs ~= nil, "contacts [" .. c .. "]: " .. tostring(err))
		eq(evs and evs[1].text, "hi", "contacts [" .. c .. "]: the message")
		eq(evs and evs[1].name, nil, "contacts [" .. c .. "]: no name")
	end
end)

test("endpoint comes from ctx", function()
	local evs = events("meta", "meta/text.json", 1, "/hooks/wa-2")
	eq(evs[1].endpoint, "/hooks/wa-2", "ev.endpoint")
end)

---------------------------------------------------------------------------
-- Rejected bodies (README, HTTP answers: not JSON, nested deeper than 64,
-- not an object)
---------------------------------------------------------------------------

local function rejects(provider, body, what)
	local evs, err = normalize.decode(provider, body,
	    { endpoint = provider == "meta" and META_EP or INSIDER_EP })
	ok(evs == nil, what .. ": no events")
	ok(type(err) == "string" and #err > 0, what .. ": an error string")
end

test("not JSON is rejected", function()
	rejects("insider", "this is not json", "plain text")
	rejects("insider", '{"key": "whatsapp-1", ', "truncated object")
	rejects("meta", '{"object": "whatsapp_business_account",}', "trailing comma")
	rejects("meta", "<xml/>", "xml")
end)

test("a JSON value that is not an object is rejected", function()
	rejects("insider", "[1,2]", "array")
	rejects("meta", "[1,2]", "array (meta)")
	rejects("insider", '"text"', "string")
	rejects("insider", "42", "number")
	rejects("insider", "null", "null")
	rejects("insider", "true", "boolean")
end)

test("nesting deeper than 64 is rejected", function()
	rejects("insider", string.rep('{"a":', 70) .. "1" .. string.rep("}", 70),
	    "70 nested objects")
	rejects("meta", '{"a":' .. string.rep("[", 69) .. string.rep("]", 69) .. "}",
	    "an object holding 69 nested arrays")
end)
