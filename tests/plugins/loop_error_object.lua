-- expect: timeout — an error object whose __tostring loops (called by the daemon's message handler, in C) is stopped within 2x the budget; the event fails
local log = require "walua.log"
return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "loop_error_object" })
		error(setmetatable({}, { __tostring = function()
			while true do end
		end }))
	end
	log.info("handled", { text = ev.text })
end
