-- expect: timeout — loops under nested pcall (pcall(pcall, f), pcall inside pcall, each level re-entering) are still stopped; the event fails as timed out
local log = require "walua.log"
local function spin() while true do end end
return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "loop_pcall_nested" })
		while true do
			pcall(function()
				while true do
					pcall(pcall, spin)
					pcall(function()
						while true do pcall(pcall, pcall, spin) end
					end)
				end
			end)
		end
	end
	log.info("handled", { text = ev.text })
end
