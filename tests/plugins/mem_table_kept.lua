-- expect: nomem — tables kept in upvalues (a cache that is never emptied: the event itself, then ever smaller pieces) grow to the cap and fill every byte left, so the memory stays referenced after the event fails; the daemon must still handle the next events (e.g. by replacing the exhausted state)
local log = require "walua.log"
local hoard = {}
local chain = false

local function fill()
	-- big pieces first, then ever smaller ones, until nothing is left
	for _, size in ipairs({ 65536, 4096, 256 }) do
		local part = {}
		hoard[#hoard + 1] = part
		pcall(function()
			local n = 0
			while true do
				n = n + 1
				part[n] = (n .. "x"):rep(size // 8)	-- no big garbage per step
			end
		end)
	end
	-- the crumbs: a linked list of small tables needs no big resize
	pcall(function()
		while true do chain = { chain } end
	end)
end

return function(ev)
	if ev.text == "attack" then
		hoard[#hoard + 1] = ev
		log.info("attack", { case = "mem_table_kept" })
		fill()
		pcall(collectgarbage)
		fill()
		error("hoard kept")
	end
	log.info("handled", { text = ev.text })
end
