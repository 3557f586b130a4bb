-- expect: harmless — no way to load bytecode: string.dump is absent, load() of a literal "\27Lua..." string, of mode "b"/"bt", and of a reader function yielding a binary chunk all fail; the handler logs what it saw (probe) and returns
local log = require "walua.log"

local function try(f, ...)
	local ok, a, b = pcall(f, ...)
	if not ok then return "raised: " .. tostring(a) end
	if a == nil then return "nil: " .. tostring(b) end
	return "loaded: " .. type(a)
end

-- a Lua 5.4 binary chunk header followed by junk: enough for load() to
-- treat it as bytecode
local LITERAL = "\27Lua\x54\x00\x19\x93\r\n\x1a\n\x04\x08\x08\x78\x56" ..
    ("\0"):rep(64)

return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "bytecode" })
		local f = function() return 42 end
		local method_dump = ("").dump	-- the string metatable's __index
		local dumped
		if type(method_dump) == "function" then
			local ok, d = pcall(method_dump, f)
			dumped = ok and d or nil
		end
		log.info("probe", {
			string_dump = type(string.dump),
			load_string_dump = try(function() return load(string.dump(f)) end),
			method_dump = type(method_dump),
			load_method_dump = dumped and try(load, dumped) or "no dump",
			load_literal = try(load, LITERAL),
			load_literal_mode_b = try(load, LITERAL, "x", "b"),
			load_literal_mode_bt = try(load, LITERAL, "x", "bt"),
			load_reader = try(load, coroutine.wrap(function()
				coroutine.yield(LITERAL)
				if dumped then coroutine.yield(dumped) end
			end)),
			load_reader_dumped = dumped and try(load, coroutine.wrap(function()
				coroutine.yield(dumped:sub(1, 1))
				coroutine.yield(dumped:sub(2))
			end)) or "no dump",
			load_text = try(load, "return 1"),
			dofile = type(dofile), loadfile = type(loadfile),
			loadstring = type(loadstring),
		})
		return
	end
	log.info("handled", { text = ev.text })
end
