-- walua_io_bot.lua - the I/O scenario's handler: every message waits on a
-- slow API (tests/bench/io_backend.c), then logs one line ("io handled";
-- bench.py takes the handled times from those lines' ts).  bench.py copies
-- it into the run's folder with BACKEND set to the backend's URL.  It
-- never raises: a failed call is logged ("io failed") and counted by
-- bench.py, not retried.  io_node.js does the same in Node.
local http = require "walua.http"
local log = require "walua.log"

local BACKEND = "@BACKEND@"

return {
	on_message = function(ev)
		local res, err = http.get(BACKEND)
		if res and res.status == 200 then
			log.info("io handled")
		else
			log.warn("io failed", { status = res and res.status,
			    err = err and tostring(err) })
		end
	end,
}
