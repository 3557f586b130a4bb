-- expect: nomem — string.rep of 1 GiB (and, if that were allowed, a string doubled forever) fails with "not enough memory" under the state's cap; the event fails, the state goes on
local log = require "walua.log"
return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "mem_strrep" })
		local bomb = string.rep("x", 1 << 30)
		local s = "x"
		while true do s = s .. s .. bomb end
	end
	log.info("handled", { text = ev.text })
end
