-- expect: timeout — a message handler that loops (xpcall(function() error("x") end, function() while true do end end)), re-entered forever, is stopped (by the hook or by the supervisor's kill) within 2x the budget; the event fails
local log = require "walua.log"
return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "loop_xpcall_handler" })
		while true do
			xpcall(function() error("x") end, function() while true do end end)
		end
	end
	log.info("handled", { text = ev.text })
end
