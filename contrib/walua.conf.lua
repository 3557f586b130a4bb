-- /etc/walua/walua.conf.lua - an example for a walua run by systemd
-- (contrib/walua.service).  Relative paths are relative to this file's
-- folder; the database lives in the state directory systemd gives walua.
-- Secrets come from the environment (EnvironmentFile= in the unit).
return {
	listen = "127.0.0.1:8080",		-- behind a TLS proxy
	admin_listen = "127.0.0.1:9090",	-- /healthz, /metrics
	database = "/var/lib/walua/walua.db",
	handlers = { "bot.lua" },
	workers = 2,
	durability = "normal",
	log_file = "/var/log/walua/walua.log",	-- SIGUSR1 reopens it
	endpoints = {
		{ path = "/webhooks/insider", provider = "insider",
		  auth = { type = "bearer",
			   token = env("INSIDER_WEBHOOK_TOKEN") } },
	},
}
