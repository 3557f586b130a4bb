-- expect: harmless — io, os.execute and every os function but time/clock/date/difftime are absent, calling them raises, and nothing runs: the file os.execute would have created does not exist; the handler logs what it saw (probe) and returns
local log = require "walua.log"

local function try(f, ...)
	local ok, err = pcall(f, ...)
	return ok and "ran" or tostring(err)
end

return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "no_io_os" })
		local marker = "/tmp/walua-sandbox-marker"	-- the test checks it never appears
		log.info("probe", {
			io = type(io),
			os_execute = type(os.execute), os_exit = type(os.exit),
			os_getenv = type(os.getenv), os_remove = type(os.remove),
			os_rename = type(os.rename), os_tmpname = type(os.tmpname),
			os_setlocale = type(os.setlocale),
			os_time = type(os.time), os_clock = type(os.clock),
			os_date = type(os.date), os_difftime = type(os.difftime),
			call_execute = try(function() return os.execute("touch " .. marker) end),
			call_io_open = try(function() return io.open(marker, "w") end),
			call_io_popen = try(function() return io.popen("touch " .. marker) end),
			call_exit = try(function() return os.exit(3) end),
			assign_execute = try(function() os.execute = print end),
			dofile = type(dofile), loadfile = type(loadfile),
		})
		return
	end
	log.info("handled", { text = ev.text })
end
