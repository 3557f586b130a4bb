-- menu_bot.lua - the demo bot that `make run` serves.
--
-- A two-item menu: "menu", "hi" or "hello" shows it; "1" or "orders" (or
-- the ORDER_STATUS button or list reply) answers with the order status;
-- "2" or "agent" (or TALK_TO_AGENT) hands over to a person.  It thanks for
-- photos, acknowledges locations, logs failed deliveries and provider
-- errors, and answers anything else with a hint to send "menu".
--
-- Try it: `make run`, then POST a message webhook with the text "menu" to
-- the demo endpoint (the README tutorial has the curl command).  The answer
-- shows up in the log as a line with "msg":"reply".  To change the bot,
-- copy this file, list it in your walua.conf.lua's handlers and send
-- SIGHUP after each edit.

local log = require "walua.log"
local router = require "walua.router"
local settings = require "walua.settings"
local wa = require "walua.whatsapp"

local bot = router.new()

-- Every answer is logged (msg "reply", fields to and text: the README
-- tutorial and the integration tests look for it).  When walua's config
-- has send credentials for the provider the event came from (Insider
-- One's, Kapso's or Meta's; a handler sees them masked, so it can tell
-- they are set), it is also sent back through that provider with
-- walua.whatsapp, once: a run again of the event does not send it twice.
-- A failed send raises, so the event is retried (then dead-lettered)
-- rather than lost.
local function can_send(provider)
	if provider == "insider" then
		local c = settings.insider or {}
		return c.auth_key ~= nil or (c.client_id ~= nil and
		    c.client_secret ~= nil)
	elseif provider == "kapso" then
		return (settings.kapso or {}).api_key ~= nil
	elseif provider == "meta" then
		return (settings.meta or {}).access_token ~= nil
	end
	return false
end

local function reply(ev, text)
	log.info("reply", { to = ev.from, text = text })
	if can_send(ev.provider) then
		local id, err = wa.reply(ev, text)
		if not id then error("reply not sent: " .. tostring(err)) end
		log.info("reply sent", { id = id })
	end
end

local function menu(ev)
	local hello = ev.name and ("Hi " .. ev.name .. "!") or "Hi!"
	reply(ev, hello .. " What can I do for you?\n" ..
	    "1) Order status\n" ..
	    "2) Talk to an agent\n" ..
	    "Reply with 1 or 2.")
end

local function orders(ev)
	reply(ev, "Your last order has shipped and should arrive in 2 days.")
end

local function agent(ev)
	reply(ev, "OK, an agent will answer you here shortly.")
end

-- Lua patterns have no alternation, hence one rule per word; %f[%A] ends
-- the word, so "history" is not "hi" and "12" is not "1".
local greetings = { "^%s*[Mm]enu", "^%s*[Hh]i%f[%A]", "^%s*[Hh]ello%f[%A]" }
for _, p in ipairs(greetings) do
	bot:text(p, menu)
end
bot:text("^%s*1%f[%D]", orders)
bot:text("^%s*[Oo]rders?%f[%A]", orders)
bot:text("^%s*2%f[%D]", agent)
bot:text("^%s*[Aa]gent%f[%A]", agent)

-- Reply rules run before text rules, so a tapped button is answered by
-- its id whatever its title says.
bot:reply("ORDER_STATUS", orders)
bot:reply("TALK_TO_AGENT", agent)

bot:type("image", function(ev)
	reply(ev, "Thanks for the photo!")
end)

bot:type("location", function(ev)
	local where = type(ev.location) == "table" and
	    (ev.location.name or ev.location.address)
	reply(ev, where and ("Got your location: " .. where .. ".") or
	    "Got your location, thanks.")
end)

-- A reaction or a system notice is not a question: answering it with the
-- fallback would only confuse the user.
bot:type("reaction", function() end)
bot:type("system", function() end)

local function first_error(ev)
	return type(ev.errors) == "table" and ev.errors[1] or {}
end

bot:status("failed", function(ev)
	local e = first_error(ev)
	log.warn("delivery failed", { message_id = ev.message_id,
	    recipient = ev.recipient, code = e.code, title = e.title })
end)

-- Throttling is expected under load: a warning, not an error.
bot:error(130429, function(ev)
	local e = first_error(ev)
	log.warn("rate limited", { provider = ev.provider, code = ev.code,
	    title = e.title, message = e.message, details = e.details })
end)

bot:on("error", function(ev)
	local e = first_error(ev)
	log.error("provider error", { provider = ev.provider, code = ev.code,
	    title = e.title, message = e.message, details = e.details })
end)

bot:fallback(function(ev)
	reply(ev, "Sorry, I did not understand. Send 'menu'.")
end)

return bot
