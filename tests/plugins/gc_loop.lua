-- expect: timeout — a __gc finalizer that loops (Lua runs finalizers with hooks off, so no count hook fires): the supervisor SIGKILLs the worker at 1.5x the budget ("stopped: it ran past its time budget") and respawns it; the event fails
local log = require "walua.log"
return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "gc_loop" })
		setmetatable({}, { __gc = function() while true do end end })
		collectgarbage()
	end
	log.info("handled", { text = ev.text })
end
