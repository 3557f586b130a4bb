-- expect: nomem — a table grown without end (t[i] = i) fails with "not enough memory" at the state's cap (32 MiB here); the table is garbage afterwards, the next event runs
local log = require "walua.log"
return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "mem_table" })
		local t = {}
		local i = 0
		while true do
			i = i + 1
			t[i] = i		-- the array part doubles: 16, 32 MiB ...
		end
	end
	log.info("handled", { text = ev.text })
end
