-- walua.conf.lua - the benchmark's walua configuration.  bench.py copies it
-- into each run's folder (with walua_bot.lua) and fills in the @NAMES@.
return {
	listen = "127.0.0.1:@PORT@",
	admin_listen = "127.0.0.1:@ADMIN_PORT@",	-- /healthz, /metrics
	database = "bench.db",
	handlers = { "walua_bot.lua" },
	workers = @WORKERS@,
	durability = "@DURABILITY@",
	log_level = "warn",
	endpoints = {
		{ path = "/webhooks/insider", provider = "insider",
		  auth = { type = "bearer", token = "@TOKEN@" } },
	},
}
