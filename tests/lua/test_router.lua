-- test_router.lua - walua.router: rule order, matching and argument checks.
--
-- Events are built by hand in the shape the README's Events section gives.
-- The runner loads testlib.lua first and calls T.finish() after this file.

local router = require "walua.router"

local seq = 0

-- An event of the given kind with the common fields of every event
-- (README, Events), plus the kind's own fields from t.
local function event(kind, t)
	seq = seq + 1
	local ev = {
		id = "ev-" .. seq, provider = "insider",
		endpoint = "/webhooks/insider", kind = kind,
		phone_number_id = "1000", display_phone_number = "15550001000",
		conversation = "1000:905551112233", timestamp = 1700000000,
		raw = {},
	}
	for k, v in pairs(t or {}) do ev[k] = v end
	return ev
end

local function text(s)
	return event("message", { type = "text", from = "905551112233",
	    name = "Ayse", message_id = "wamid.T" .. seq, text = s })
end

local function button(payload, title)
	return event("message", { type = "button", from = "905551112233",
	    message_id = "wamid.B" .. seq, text = title, reply_id = payload,
	    context = { from = "15550001000", id = "wamid.OUT" } })
end

local function list_reply(id, title)
	return event("message", { type = "interactive", from = "905551112233",
	    message_id = "wamid.L" .. seq, text = title, reply_id = id })
end

local function image(caption)
	return event("message", { type = "image", from = "905551112233",
	    message_id = "wamid.I" .. seq, text = caption,
	    media = { id = "m1", mime_type = "image/jpeg",
	    caption = caption } })
end

local function status(s, errors)
	return event("status", { status = s, message_id = "wamid.OUT",
	    recipient = "905551112233", errors = errors })
end

local function err(code, more)
	local errors = { { code = code, title = "error " .. code } }
	for _, e in ipairs(more or {}) do errors[#errors + 1] = e end
	return event("error", { code = code, errors = errors })
end

-- A handler returning its name and the extra arguments it got.
local function named(name)
	return function(ev, ...)
		return name, table.pack(...)
	end
end

-- The name of the rule that handled ev, or nil.
local function who(bot, ev)
	return (bot.on_event(ev))
end

test("module: VERSION and new", function()
	eq(router.VERSION, 1)
	local bot = router.new()
	eq(type(bot), "table")
	eq(type(bot.on_event), "function")
end)

test("router is a plain handler table: on_event is its only field", function()
	local bot = router.new():text("x", named("t")):fallback(named("f"))
	local names = {}
	for k in pairs(bot) do
		if type(k) == "string" then names[#names + 1] = k end
	end
	eq(names, { "on_event" })
	-- The host tries on_<kind> before on_event: none may exist.
	for _, kind in ipairs({ "message", "status", "accepted", "error",
	    "template", "conversation", "unknown" }) do
		eq(bot["on_" .. kind], nil, "on_" .. kind)
	end
end)

test("chaining: every method returns the router", function()
	local bot = router.new()
	local f = named("x")
	eq(bot:text("a", f), bot)
	eq(bot:reply("A", f), bot)
	eq(bot:type("image", f), bot)
	eq(bot:status("read", f), bot)
	eq(bot:error(131047, f), bot)
	eq(bot:on("accepted", f), bot)
	eq(bot:fallback(f), bot)
	local chained = router.new():text("a", f):reply("A", f):type("image", f)
	    :status("*", f):error(1, f):on("unknown", f):fallback(f)
	eq(chained.on_event(text("a")), "x")
end)

test("text: Lua pattern, captures passed after ev", function()
	local got
	local bot = router.new():text("^order (%d+) (%a+)", function(ev, ...)
		got = table.pack(ev, ...)
		return "done"
	end)
	local ev = text("order 42 blue")
	eq(bot.on_event(ev), "done")
	eq(got.n, 3)
	ok(got[1] == ev, "ev is the first argument")
	eq(got[2], "42")
	eq(got[3], "blue")
end)

test("text: no captures means ev alone", function()
	local bot = router.new():text("^%s*[Mm]enu", named("menu"))
	local name, args = bot.on_event(text("  Menu please"))
	eq(name, "menu")
	eq(args.n, 0)
	eq(who(bot, text("show me the menu")), nil)
end)

test("text: position captures are passed too", function()
	local bot = router.new():text("()ab()", named("pos"))
	local _, args = bot.on_event(text("xxab"))
	eq(args, { n = 2, 3, 5 })
end)

test("text: messages without text skip text rules", function()
	local bot = router.new():text("", named("any text"))
	    :type("image", named("image"))
	eq(who(bot, image(nil)), "image")
	eq(who(bot, image("a caption")), "any text")
end)

test("text: first matching rule wins, in the order added", function()
	local bot = router.new():text("^hi", named("first"))
	    :text("hi", named("second"))
	eq(who(bot, text("hi there")), "first")
	eq(who(bot, text("oh hi")), "second")
end)

test("reply: exact id of a button or list reply", function()
	local bot = router.new():reply("ORDER_STATUS", named("orders"))
	    :reply("TALK_TO_AGENT", named("agent"))
	eq(who(bot, button("ORDER_STATUS", "Order status")), "orders")
	eq(who(bot, list_reply("TALK_TO_AGENT", "Agent")), "agent")
	eq(who(bot, button("order_status", "x")), nil)
	eq(who(bot, button("ORDER", "x")), nil)
	eq(who(bot, text("ORDER_STATUS")), nil)
end)

test("type: matches ev.type", function()
	local bot = router.new():type("location", named("loc"))
	local ev = event("message", { type = "location", from = "1",
	    location = { latitude = 41.0, longitude = 29.0 } })
	eq(who(bot, ev), "loc")
	eq(who(bot, image(nil)), nil)
end)

test("message order: reply, text, type, on(message), fallback", function()
	-- Rules added in reverse of their precedence, to show order is by
	-- rule kind, not by when they were added.
	local bot = router.new():fallback(named("fallback"))
	    :on("message", named("on"))
	    :type("button", named("type"))
	    :text("^Order", named("text"))
	    :reply("ORDER_STATUS", named("reply"))
	eq(who(bot, button("ORDER_STATUS", "Order status")), "reply")
	eq(who(bot, button("OTHER", "Order status")), "text")
	eq(who(bot, button("OTHER", "Something")), "type")
	eq(who(bot, text("Something")), "on")

	local nb = router.new():fallback(named("fallback"))
	    :type("button", named("type"))
	eq(who(nb, text("Something")), "fallback")
end)

test("status: exact status and \"*\"", function()
	local bot = router.new():status("read", named("read"))
	    :status("*", named("any"))
	eq(who(bot, status("read")), "read")
	eq(who(bot, status("delivered")), "any")
	eq(who(bot, status("failed")), "any")
	local only = router.new():status("read", named("read"))
	eq(who(only, status("delivered")), nil)
	local star = router.new():status("*", named("any"))
	    :status("read", named("read"))
	eq(who(star, status("read")), "any")
end)

test("status: status rules, then error rules, then on(status)", function()
	local failed = { { code = 131047, title = "Re-engagement message" } }
	local bot = router.new():on("status", named("on"))
	    :error(131047, named("error"))
	    :status("failed", named("failed"))
	eq(who(bot, status("failed", failed)), "failed")

	bot = router.new():on("status", named("on"))
	    :error(131047, named("error"))
	eq(who(bot, status("failed", failed)), "error")
	eq(who(bot, status("failed", { { code = 1 } })), "on")
	eq(who(bot, status("read")), "on")
end)

test("error: error events by code, and failed statuses with it", function()
	local bot = router.new():error(130429, named("rate"))
	    :error(131026, named("undeliverable"))
	eq(who(bot, err(130429)), "rate")
	eq(who(bot, err(131026)), "undeliverable")
	eq(who(bot, err(100)), nil)
	eq(who(bot, event("error", { code = 130429 })), "rate")
	-- Any entry of a status' errors list, not only the first.
	local failed = status("failed", { { code = 1, title = "x" },
	    { code = 131026, title = "Message undeliverable" } })
	eq(who(bot, failed), "undeliverable")
	eq(who(bot, status("failed", { { code = 2 } })), nil)
	eq(who(bot, status("failed")), nil)
end)

test("error: any code of an error event's errors list", function()
	local bot = router.new():error(131056, named("pair"))
	eq(who(bot, err(100, { { code = 131056 } })), "pair")
end)

test("error: codes compare by value (float, string)", function()
	local bot = router.new():error(130429, named("rate"))
	eq(who(bot, err(130429.0)), "rate")
	eq(who(bot, err("130429")), "rate")
	local s = router.new():error("130429", named("rate"))
	eq(who(s, err(130429)), "rate")
	local word = router.new():error("E_LIMIT", named("word"))
	eq(who(word, err("E_LIMIT")), "word")
	eq(who(word, err("e_limit")), nil)
end)

test("error: error rules, then on(error)", function()
	local bot = router.new():on("error", named("on"))
	    :error(130429, named("rate"))
	eq(who(bot, err(130429)), "rate")
	eq(who(bot, err(500)), "on")
end)

test("on: other kinds", function()
	local bot = router.new():on("accepted", named("accepted"))
	    :on("template", named("template"))
	    :on("conversation", named("conversation"))
	    :on("unknown", named("unknown"))
	eq(who(bot, event("accepted", { message_id = "wamid.A",
	    recipient = "905551112233", input = "+90 555 111 22 33" })),
	    "accepted")
	eq(who(bot, event("template", { template = { name = "welcome",
	    language = "en" }, recipient = "905551112233" })), "template")
	eq(who(bot, event("conversation", {
	    event = "whatsapp.conversation.ended",
	    conversation_info = {} })), "conversation")
	eq(who(bot, event("unknown", {})), "unknown")
	eq(who(bot, text("hello")), nil)
	eq(who(bot, status("read")), nil)
end)

test("on: first rule of a kind wins", function()
	local bot = router.new():on("accepted", named("one"))
	    :on("accepted", named("two"))
	eq(who(bot, event("accepted", {})), "one")
end)

test("fallback: only for messages", function()
	local bot = router.new():fallback(named("fallback"))
	eq(who(bot, text("anything")), "fallback")
	eq(who(bot, image(nil)), "fallback")
	eq(who(bot, status("delivered")), nil)
	eq(who(bot, status("failed", { { code = 131026 } })), nil)
	eq(who(bot, err(130429)), nil)
	eq(who(bot, event("accepted", {})), nil)
	eq(who(bot, event("unknown", {})), nil)
end)

test("no match returns nil, for every kind", function()
	local bot = router.new():text("^menu", named("menu"))
	for _, ev in ipairs({ text("nothing"), status("read"), err(1),
	    event("accepted", {}), event("template", {}),
	    event("conversation", {}), event("unknown", {}),
	    event("brand-new-kind", {}), event(nil, {}) }) do
		eq(bot.on_event(ev), nil)
	end
	local empty = router.new()
	eq(empty.on_event(text("menu")), nil)
end)

test("on_event returns every result of the handler", function()
	local bot = router.new():text("x", function()
		return 1, nil, "three"
	end)
	local r = table.pack(bot.on_event(text("x")))
	eq(r, { n = 3, 1, nil, "three" })
end)

test("a handler's error propagates (the event fails)", function()
	local bot = router.new():text("boom", function() error("kaput") end)
	local okk, msg = pcall(bot.on_event, text("boom"))
	ok(not okk, "on_event raised")
	ok(string.find(tostring(msg), "kaput", 1, true), "message kept")
end)

test("on_event rejects a non-table event", function()
	local bot = router.new()
	local okk, msg = pcall(bot.on_event, "message")
	ok(not okk, "raised")
	ok(string.find(msg, "event must be a table", 1, true), msg)
end)

test("routers are independent", function()
	local a = router.new():text("x", named("a"))
	local b = router.new():text("x", named("b"))
	eq(who(a, text("x")), "a")
	eq(who(b, text("x")), "b")
	eq(who(router.new(), text("x")), nil)
end)

-- Run f, which must raise an error containing want.
local function raises(f, want)
	local okk, msg = pcall(f)
	ok(not okk, "expected an error containing '" .. want .. "'")
	ok(string.find(tostring(msg), want, 1, true),
	    "error '" .. tostring(msg) .. "' contains '" .. want .. "'")
end

test("argument errors raise at registration", function()
	local bot = router.new()
	local f = named("x")
	raises(function() bot:text(nil, f) end,
	    "router:text: pattern must be a string")
	raises(function() bot:text(42, f) end,
	    "router:text: pattern must be a string")
	raises(function() bot:reply(1, f) end,
	    "router:reply: id must be a string")
	raises(function() bot:type(nil, f) end,
	    "router:type: type must be a string")
	raises(function() bot:status(true, f) end,
	    "router:status: status must be a string")
	raises(function() bot:error({}, f) end,
	    "router:error: code must be a number or a string")
	raises(function() bot:on(nil, f) end,
	    "router:on: kind must be a string")
	raises(function() bot:on("messages", f) end,
	    "router:on: unknown event kind 'messages'")
	for _, m in ipairs({ "text", "reply", "type", "status", "on" }) do
		raises(function() bot[m](bot, "message", nil) end,
		    "router:" .. m .. ": handler must be a function")
	end
	raises(function() bot:error(1, "f") end,
	    "router:error: handler must be a function")
	raises(function() bot:fallback() end,
	    "router:fallback: handler must be a function")
	-- Dot instead of colon.
	raises(function() bot.text("x", f) end, "call it as bot:text(...)")
	-- Nothing half-registered.
	eq(bot.on_event(text("message")), nil)
end)

test("argument errors name the caller's file, not router.lua", function()
	local okk, msg = pcall(function() router.new():text(1, print) end)
	local _, here = pcall(function() error("here") end)
	ok(not okk, "raised")
	local chunk = string.match(here, "^(.-):%d+: here$")
	ok(chunk, here)
	eq(string.sub(msg, 1, #chunk + 1), chunk .. ":")
	ok(string.find(msg, "^.-:%d+: router:text: "), msg)
end)
