-- walua_io.conf.lua - walua's configuration in the I/O scenario: the
-- defaults (workers, limits, durability) with one endpoint and the
-- handler.  bench.py copies it into the run's folder (with
-- walua_io_bot.lua) and fills in the @NAMES@; the one after log_level
-- becomes an admin_listen line when this walua accepts that key.
return {
	listen = "127.0.0.1:@PORT@",
	database = "bench.db",
	handlers = { "walua_io_bot.lua" },
	log_level = "info",@ADMIN@
	endpoints = {
		{ path = "/webhooks/insider", provider = "insider",
		  auth = { type = "bearer", token = "@TOKEN@" } },
	},
}
