-- The built-in demo configuration, used by `walua serve` when there is no
-- ./walua.conf.lua and no -c FILE.  Its handler is compiled into the binary,
-- so it runs from any folder.  Copy it to walua.conf.lua to start your own.
return {
	listen = env("WALUA_LISTEN", "127.0.0.1:8080"),
	admin_listen = env("WALUA_ADMIN_LISTEN", "127.0.0.1:9090"),
	database = "walua.db",
	handlers = { "lua/examples/menu_bot.lua" },
	endpoints = {
		{ path = "/webhooks/insider", provider = "insider",
		  auth = { type = "bearer",
			   token = env("INSIDER_WEBHOOK_TOKEN", "demo-token") } },
	},
}
