-- expect: harmless — string methods ("abc"):upper() go through the string metatable, which no path hands out: the attack tries pairs(string), the string view, load with the string library as its environment and a chunk's own string; the next event, and another script, still call the original methods
local log = require "walua.log"

local function evil() return "PWNED" end

local function try(f)
	local ok, err = pcall(f)
	return ok and "ran" or tostring(err)
end

local function looks()
	return {
		method_upper = ("abc"):upper(), method_rep = ("ab"):rep(2),
		method_format = ("%d"):format(7), method_len = ("abcd"):len(),
		method_find = tostring(("hello"):find("l")),
		lib_upper = string.upper("abc"),
	}
end

return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "shared_string_methods" })
		local got = {}
		local _, backing = pairs(string)
		got.pairs_backing = type(backing)
		if type(backing) == "table" then
			got.pairs_set = try(function()
				backing.upper, backing.rep, backing.format = evil, evil, evil
				backing.len, backing.find = evil, evil
			end)
		end
		for k, v in pairs(string) do
			got["iter_" .. k] = try(function() string[k] = evil end)
		end
		local chunk = load("upper = ...; rep = ...", "=x", "t", string)
		got.load_env = chunk and try(function() chunk(evil) end) or "no chunk"
		got.index_meta = try(function() ("x").__index.upper = evil end)
		got.meta = tostring(getmetatable("x"))
		log.info("probe", got)
		return
	end
	local now = looks()
	now.text = ev.text
	log.info("handled", now)
end
