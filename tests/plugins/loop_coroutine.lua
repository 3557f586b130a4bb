-- expect: timeout — the loop runs inside coroutines (created by the handler and by the script at load time), each resumed under pcall in a loop; the hook must reach them; the event fails as timed out
local log = require "walua.log"
-- made while the script loads: it must not escape the per-call budget
local early = coroutine.wrap(function() while true do end end)
return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "loop_coroutine" })
		pcall(early)
		while true do
			pcall(coroutine.wrap(function() while true do end end))
			local co = coroutine.create(function()
				while true do coroutine.yield() end
			end)
			while coroutine.resume(co) do end
		end
	end
	log.info("handled", { text = ev.text })
end
