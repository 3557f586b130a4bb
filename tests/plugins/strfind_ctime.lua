-- expect: timeout — pathological backtracking in string.find runs in C for minutes (80 chars: ~3.9 s; 200 chars: ~100x that), where no hook fires: the supervisor SIGKILLs the worker at 1.5x the budget and respawns it; the event fails
local log = require "walua.log"
return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "strfind_ctime" })
		local r = string.find(("a"):rep(200), ("a*"):rep(5) .. "b")
		log.info("attack finished", { result = tostring(r) })
	end
	log.info("handled", { text = ev.text })
end
