-- expect: timeout — the loop inside pcall, re-entered forever: pcall must not swallow the timeout; the event fails as timed out
local log = require "walua.log"
return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "loop_pcall" })
		while true do
			pcall(function() while true do end end)
		end
	end
	log.info("handled", { text = ev.text })
end
