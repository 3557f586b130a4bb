-- expect: harmless — collectgarbage may count and collect, but "stop", "restart", "incremental", "generational", "setpause" and "setstepmul" raise, and the collector is still running afterwards (also on the next event); the handler logs what it saw (probe) and returns
local log = require "walua.log"

local OPTS = { "stop", "restart", "incremental", "generational", "setpause",
    "setstepmul" }

return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "gc_control" })
		local got = {}
		for _, opt in ipairs(OPTS) do
			local ok, err = pcall(collectgarbage, opt, 1000)
			got[opt] = ok and "ran" or tostring(err)
		end
		got.count = type(collectgarbage("count"))
		got.collect = tostring(collectgarbage("collect"))
		got.isrunning = collectgarbage("isrunning")
		log.info("probe", got)
		return
	end
	log.info("handled", { text = ev.text, gc_running = collectgarbage("isrunning") })
end
