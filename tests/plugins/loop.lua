-- expect: timeout — a bare `while true do end` is stopped by the count hook ("handler timed out") within the budget; the event fails, the worker goes on
local log = require "walua.log"
return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "loop" })
		while true do end
	end
	log.info("handled", { text = ev.text })
end
