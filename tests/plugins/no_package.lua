-- expect: harmless — package (and so package.loadlib) is absent, and require finds no system or C module ("os", "io", "socket", "ffi", "debug", "package", "lfs", "posix", "cjson.safe", the private walua.host/walua.config, a path outside the handler's folder); the handler logs each require's result (probe) and returns
local log = require "walua.log"

local NAMES = { "os", "io", "socket", "ffi", "debug", "package", "lfs",
    "posix", "string", "jit", "cjson.safe", "walua.host", "walua.config",
    "..etc.passwd", "/etc/passwd", "etc.passwd", "" }

return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "no_package" })
		local got = {}
		for _, name in ipairs(NAMES) do
			local ok, m = pcall(require, name)
			got["require " .. name] = ok and ("loaded " .. type(m))
			    or ("error: " .. tostring(m))
		end
		got.package = type(package)
		got.loadlib = (function()
			local ok, err = pcall(function() return package.loadlib("libc.so.6", "system") end)
			return ok and "ran" or tostring(err)
		end)()
		got.require_nonstring = (function()
			local ok, err = pcall(require, {})
			return ok and "ran" or tostring(err)
		end)()
		log.info("probe", got)
		return
	end
	log.info("handled", { text = ev.text })
end
