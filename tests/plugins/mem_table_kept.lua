-- expect: nomem — a table kept in an upvalue (a cache that is never emptied) grows to the cap and fills every byte left; the memory stays referenced after the event fails, so the daemon must still handle the next event (e.g. by replacing the exhausted state)
local log = require "walua.log"
local hoard = {}
return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "mem_table_kept" })
		-- big pieces first, then ever smaller ones, until nothing is left
		for _, size in ipairs({ 65536, 4096, 256, 16 }) do
			local part = {}
			hoard[#hoard + 1] = part
			pcall(function()
				local n = 0
				while true do
					n = n + 1
					part[n] = ("x"):rep(size) .. n
				end
			end)
		end
		pcall(function()
			local n = #hoard
			while true do n = n + 1; hoard[n] = n end
		end)
		error("hoard: " .. #hoard .. " parts kept")
	end
	log.info("handled", { text = ev.text })
end
