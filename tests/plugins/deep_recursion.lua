-- expect: fail /stack overflow|not enough memory/ — unbounded Lua recursion fails with Lua's stack overflow error (or the memory cap, whichever comes first), fast; the event fails, the state goes on
local log = require "walua.log"
local function f(n) return 1 + f(n + 1) end
return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "deep_recursion" })
		f(1)
	end
	log.info("handled", { text = ev.text })
end
