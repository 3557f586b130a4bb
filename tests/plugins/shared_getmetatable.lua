-- expect: harmless — getmetatable() hands out no shared metatable: not of a library, a module, a router, a json.array, an error value or a string; the attack changes every metatable it gets, and the next event, and another script, still see routers dispatch, arrays encode as [] and errors print as before
local log = require "walua.log"
local json = require "walua.json"
local router = require "walua.router"
local http = require "walua.http"

local function evil() return "PWNED" end

local function try(f)
	local ok, err = pcall(f)
	return ok and "ran" or tostring(err)
end

local function looks()
	local _, err = http.error(500, "X1", "boom")
	return {
		method_upper = ("abc"):upper(), lib_upper = string.upper("abc"),
		array = json.encode(json.array()), err = tostring(err),
		router = type(router.new().on_event), route = type(router.new().text),
		floor = math.floor(1.5),
	}
end

return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "shared_getmetatable" })
		local _, err = http.error(500, "X1", "boom")
		local got = {}
		for name, v in pairs({ string = string, math = math, json = json,
		    router = router, bot = router.new(), array = json.array(),
		    err = err, str = "", http = http, log = log }) do
			local mt = getmetatable(v)
			got[name] = type(mt) == "table" and "table" or tostring(mt)
			if type(mt) == "table" then
				got[name .. "_set"] = try(function()
					mt.__index = { upper = evil, text = evil, new = evil }
					mt.__tostring = evil
					mt.__newindex = evil
					mt.__metatable = nil
				end)
			end
			got[name .. "_setmetatable"] = try(function()
				setmetatable(v, { __index = evil })
			end)
		end
		log.info("probe", got)
		return
	end
	local now = looks()
	now.text = ev.text
	log.info("handled", now)
end
