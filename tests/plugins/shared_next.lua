-- expect: harmless — next() and rawget() on a shared library or a require'd module find nothing to change (the views are empty; their tables stay behind them): the attack walks them with next and rawget and replaces what it finds, and the next event, and another script, still see the original functions
local log = require "walua.log"
local json = require "walua.json"
local router = require "walua.router"
local insider = require "walua.insider"

local function evil() return "PWNED" end

local function try(f)
	local ok, err = pcall(f)
	return ok and "ran" or tostring(err)
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
		log.info("attack", { case = "shared_next" })
		local got = {}
		for name, lib in pairs({ string = string, math = math, table = table,
		    utf8 = utf8, coroutine = coroutine, os = os, json = json,
		    router = router, insider = insider, webhooks = insider.webhooks }) do
			local k, v = next(lib)
			got[name .. "_next"] = tostring(k)
			local n = 0
			while k ~= nil do
				if try(function() rawset(lib, k, evil) end) == "ran" then
					n = n + 1
				end
				k, v = next(lib, k)
			end
			got[name .. "_replaced"] = n
			got[name .. "_rawget"] = type(rawget(lib, "upper") or
			    rawget(lib, "floor") or rawget(lib, "encode") or
			    rawget(lib, "new") or rawget(lib, "list"))
			got[name .. "_rawset"] = try(function() rawset(lib, "upper", evil) end)
		end
		log.info("probe", got)
		return
	end
	local now = looks()
	now.text = ev.text
	log.info("handled", now)
end
