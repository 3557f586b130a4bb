-- expect: fail /stack overflow/ — recursion through C (an __index metamethod indexing itself, and string.gsub callbacks calling gsub) fails with "C stack overflow", fast; the event fails, no crash
local log = require "walua.log"
local t = setmetatable({}, {})
getmetatable(t).__index = function(self, k) return self[k] end
local function g(s) return (s:gsub(".", g)) end
return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "deep_recursion_c" })
		local ok, err = pcall(g, "ab")
		log.info("gsub recursion", { ok = ok, err = tostring(err) })
		local _ = t.anything
	end
	log.info("handled", { text = ev.text })
end
