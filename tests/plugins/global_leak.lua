-- expect: harmless — a global set while handling one event is not visible to the next conversation's handler: plain assignment, _ENV.x, _G.x raise ("assignment to undeclared global"), and the bypasses (rawset(_G, ...), rawset(_ENV, ...), rawset on a shared library) must not carry the value to the next event either; the next event (another conversation) logs what it sees
local log = require "walua.log"

-- a global the script declares while it loads (the host lets a script
-- reassign its own declared globals; recorded, see test_sandbox.py)
declared = "load-time"

local function try(f)
	local ok, err = pcall(f)
	return ok and "ran" or tostring(err)
end

local function sees()
	return {
		leak_plain = tostring(rawget(_ENV, "leak_plain") or leak_plain),
		leak_env = tostring(_ENV.leak_env),
		leak_g = tostring(_G.leak_g),
		leak_rawset_g = tostring(leak_rawset_g),
		leak_rawset_env = tostring(leak_rawset_env),
		leak_lib = tostring(table.leak_lib),
		leak_print = tostring(rawget(_ENV, "print")),
		declared = tostring(declared),
		require_type = type(require),
	}
end

return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "global_leak" })
		local secret = "from " .. tostring(ev.conversation)
		local got = {
			plain = try(function() leak_plain = secret end),
			env = try(function() _ENV.leak_env = secret end),
			g = try(function() _G.leak_g = secret end),
			rawset_g = try(function() rawset(_G, "leak_rawset_g", secret) end),
			rawset_env = try(function() rawset(_ENV, "leak_rawset_env", secret) end),
			rawset_lib = try(function() rawset(table, "leak_lib", secret) end),
			shadow_print = try(function() rawset(_ENV, "print", function() end) end),
			shadow_require = try(function() require = nil end),
			declared = try(function() declared = secret end),
		}
		log.info("probe", got)
		return
	end
	local now = sees()
	now.text = ev.text
	log.info("handled", now)
end
