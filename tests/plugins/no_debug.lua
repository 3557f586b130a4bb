-- expect: harmless — debug is absent (no debug.sethook to clear the budget hook, no getregistry, no getupvalue into the sandbox), and the metatables of the sandbox's own tables are hidden; the handler logs what it saw (probe) and returns
local log = require "walua.log"

return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "no_debug" })
		local ok, err = pcall(function() debug.sethook() end)
		local ok2, err2 = pcall(require, "debug")
		log.info("probe", {
			debug = type(debug),
			sethook = ok and "ran" or tostring(err),
			require_debug = ok2 and "loaded" or tostring(err2),
			env_metatable = tostring(getmetatable(_ENV)),
			string_metatable = tostring(getmetatable("")),
			lib_metatable = tostring(getmetatable(string)),
			setmetatable_env = select(2, pcall(setmetatable, _ENV, {})),
			setmetatable_lib = select(2, pcall(setmetatable, string, {})),
			getfenv = type(getfenv), setfenv = type(setfenv),
			newproxy = type(newproxy),
		})
		return
	end
	log.info("handled", { text = ev.text })
end
