-- expect: harmless — pairs() on a shared library or a require'd module hands out no backing table: the attack replaces every function it can reach through pairs (the second value pairs returns, and every table it iterates to), and the next event, and another script, still see the original functions
local log = require "walua.log"
local json = require "walua.json"
local router = require "walua.router"
local insider = require "walua.insider"

local function evil() return "PWNED" end

local function try(f)
	local ok, err = pcall(f)
	return ok and "ran" or tostring(err)
end

-- overwrite every field of t (and of the tables below it) with evil
local function trash(t, depth)
	if type(t) ~= "table" or depth > 3 then return "not a table" end
	local n = 0
	for k, v in pairs(t) do
		if type(v) == "table" then trash(v, depth + 1) end
		if try(function() t[k] = evil end) == "ran" then n = n + 1 end
		if try(function() rawset(t, k, evil) end) == "ran" then n = n + 1 end
	end
	return n
end

local function looks()
	return {
		method_upper = ("abc"):upper(), lib_upper = string.upper("abc"),
		floor = math.floor(1.5), concat = table.concat({ "a", "b" }, "-"),
		char = utf8.char(72), running = type(coroutine.running()),
		time = math.type(os.time()), encode = json.encode({ 1 }),
		router = type(router.new().on_event), list = type(insider.webhooks.list),
	}
end

return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "shared_pairs" })
		local got = {}
		for name, lib in pairs({ string = string, math = math, table = table,
		    utf8 = utf8, coroutine = coroutine, os = os, json = json,
		    router = router, insider = insider, log = log }) do
			local _, backing = pairs(lib)
			got[name .. "_backing"] = type(backing)
			got[name .. "_backing_writes"] = trash(backing, 0)
			got[name .. "_writes"] = trash(lib, 0)
		end
		log.info("probe", got)
		return
	end
	local now = looks()
	now.text = ev.text
	log.info("handled", now)
end
