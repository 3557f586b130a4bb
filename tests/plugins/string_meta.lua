-- expect: harmless — the string metatable cannot be reached or changed (getmetatable("") is false, so getmetatable("").__index = ... raises) and the shared string library is read-only (string.upper = nil raises; rawset on it must not change what any later event sees); the next event, of another conversation, still sees the real string functions
local log = require "walua.log"

local function try(f)
	local ok, err = pcall(f)
	return ok and "ran" or tostring(err)
end

local function looks()
	return {
		method_upper = ("abc"):upper(),
		lib_upper = string.upper("abc"),
		lib_rep = string.rep("ab", 2),
		lib_format = string.format("%d", 7),
		method_len = ("abcd"):len(),
		table_concat = table.concat({ "a", "b" }, "-"),
		math_pi = tostring(math.pi),
		string_meta = tostring(getmetatable("")),
	}
end

return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "string_meta" })
		local evil = function() return "PWNED" end
		local got = {
			set_index = try(function() getmetatable("").__index = { upper = evil } end),
			set_upper_nil = try(function() string.upper = nil end),
			set_upper = try(function() string.upper = evil end),
			rawset_upper = try(function() rawset(string, "upper", evil) end),
			rawset_rep = try(function() rawset(string, "rep", evil) end),
			rawset_format = try(function() rawset(string, "format", evil) end),
			rawset_concat = try(function() rawset(table, "concat", evil) end),
			rawset_pi = try(function() rawset(math, "pi", 3) end),
			set_string_meta = try(function() setmetatable("", {}) end),
			method_assign = try(function() local s = "x"; s.upper = evil end),
		}
		log.info("probe", got)
		local now = looks()
		now.when = "attack"
		log.info("sees", now)
		return
	end
	local now = looks()
	now.text = ev.text
	log.info("handled", now)
end
