-- walua_bot.lua - the benchmark's handler: a router with three text rules,
-- each doing a trivial amount of work (build the reply a bot would send).
-- nginx_bot.lua and node_server.js do the same for the same payloads.
local router = require "walua.router"

local bot = router.new()
local sent = 0

bot:text("^menu", function(ev)
	local reply = "Hi " .. (ev.name or "there") ..
	    "! 1) Where is my order?  2) Talk to us"
	sent = sent + #reply
end)

bot:text("^order%s*(%d*)", function(ev, number)
	local reply = "Order " .. number .. " is on its way to " .. ev.from
	sent = sent + #reply
end)

bot:fallback(function(ev)
	local reply = "Sorry, I did not understand \"" ..
	    (ev.text or ""):sub(1, 40) .. "\". Write menu."
	sent = sent + #reply
end)

return bot
