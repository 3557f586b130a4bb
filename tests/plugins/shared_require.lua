-- expect: harmless — the tables require returns for walua's modules and cjson are read-only at every depth: the attack assigns and rawsets their functions (and those of the tables inside them, such as walua.insider.webhooks), and the next event, and another script, still see the originals
local log = require "walua.log"

local function evil() return "PWNED" end

local function try(f)
	local ok, err = pcall(f)
	return ok and "ran" or tostring(err)
end

local function looks()
	return {
		encode = require("walua.json").encode({ 1 }),
		cjson = require("cjson").encode({ 2 }),
		router = type(require("walua.router").new),
		list = tostring(require("walua.insider").webhooks.list == evil),
		request = tostring(require("walua.http").request == evil),
		sha = require("walua.crypto").sha256("a"):sub(1, 8),
		log_info = tostring(require("walua.log").info == evil),
	}
end

return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "shared_require" })
		local got = {}
		for _, case in ipairs({
			{ "walua.json", "encode" }, { "cjson", "encode" },
			{ "walua.router", "new" }, { "walua.http", "request" },
			{ "walua.crypto", "sha256" }, { "walua.log", "info" },
			{ "walua.store", "get" }, { "walua.kapso", "webhooks" },
			{ "walua.settings", "listen" },
		}) do
			local m = require(case[1])
			got[case[1] .. "_set"] = try(function() m[case[2]] = evil end)
			got[case[1] .. "_rawset"] = try(function() rawset(m, case[2], evil) end)
		end
		local hooks = require("walua.insider").webhooks
		got.nested_set = try(function() hooks.list = evil end)
		got.nested_rawset = try(function() rawset(hooks, "list", evil) end)
		got.same_table = tostring(require("walua.json") == require("walua.json"))
		log.info("probe", got)
		return
	end
	local now = looks()
	now.text = ev.text
	log.info("handled", now)
end
