-- walua/config.lua - check a configuration table and fill in its defaults.
--
-- Run by the C core (src/config.c) in a private state, never in a handler's
-- sandbox.  check(t, file, dir) returns the normalized table (every key
-- present, relative paths made absolute against dir) or raises
-- "FILE: KEY.PATH: problem".  Unknown keys are errors at any depth: a typo
-- must not be silently ignored.

local M = {}

-- Spec constructors.  A spec is a table { kind = ..., default = ... }.
local function str(default, opts)
	opts = opts or {}
	opts.kind, opts.default = "string", default
	return opts
end
local function int(default, min, max)
	return { kind = "integer", default = default, min = min, max = max }
end
local function num(default, min, max)
	return { kind = "number", default = default, min = min, max = max }
end
local function enum(values, default)
	return { kind = "enum", values = values, default = default }
end
local function path(default)
	return { kind = "path", default = default }
end
local function list(of, default)
	return { kind = "list", of = of, default = default or {} }
end
-- A list that may be absent (nil), where absent means "the default the
-- checks below choose", unlike an empty list.
local function maybe_list(of)
	return { kind = "list", of = of, optional = true }
end
-- "HOST:PORT" to listen on; with off, false turns the listener off.
local function address(default, off)
	return { kind = "address", default = default, off = off }
end
local function record(fields, required)
	return { kind = "record", fields = fields, required = required or {} }
end
local function optional(spec)
	spec.optional = true
	return spec
end

-- The events of an Insider One v2 webhook (a conversational one needs reply).
local INSIDER_EVENTS = { "sent", "delivered", "read", "reply", "failed" }

local auth = record({
	type = enum({ "bearer", "oauth2", "kapso", "meta" }),
	token = optional(str()),
	secret = optional(str()),
	app_secret = optional(str()),
	verify_token = optional(str()),
}, { "type" })

local schema = record({
	listen = address("127.0.0.1:8080"),
	-- /metrics and /healthz (never on listen): on the loopback by default,
	-- so exposing the webhook port does not expose them; false: nowhere
	admin_listen = address("127.0.0.1:9090", true),
	database = path("walua.db"),
	handlers = list(path()),
	workers = int(2, 1, 64),
	durability = enum({ "full", "normal", "off" }, "normal"),
	endpoints = list(record({
		path = str(),
		provider = enum({ "insider", "kapso", "meta" }),
		auth = auth,
	}, { "path", "provider", "auth" })),
	oauth2 = record({
		path = str("/oauth/token"),
		token_ttl = int(3600, 1, 86400 * 30),
		clients = list(record({
			id = str(),
			secret = str(),
			refresh_token = optional(str()),
			scopes = list(str()),
		}, { "id", "secret" })),
	}),
	insider = record({
		auth_key = optional(str()),
		client_id = optional(str()),
		client_secret = optional(str()),
		scopes = list(str(), { "wa-webhook-read", "wa-webhook-manage",
		    "wa-webhook-update", "wa-webhook-delete" }),
		api_url = str("https://whatsapp.useinsider.com"),
		gateway_url = str("https://gw.useinsider.com"),
	}),
	kapso = record({
		api_key = optional(str()),
		api_url = str("https://app.kapso.ai/api/v1"),
		-- Kapso's Meta-compatible send API (walua.whatsapp)
		meta_url = str("https://api.kapso.ai/meta/whatsapp"),
		graph_version = str("v24.0"),
	}),
	-- Meta's Cloud API, for replies to events from a meta endpoint
	meta = record({
		access_token = optional(str()),
		graph_version = str("v21.0"),
		api_url = str("https://graph.facebook.com"),
	}),
	-- walua.whatsapp: pacing per business number, media size cap
	outbound = record({
		rate_per_number = int(80, 1, 100000),
		max_media_bytes = int(16777216, 1024, 1024 * 1024 * 1024),
	}),
	-- several instances on one PostgreSQL database (README, "Running
	-- several instances"): an instance silent this long is taken for dead
	cluster = record({
		lease_s = int(30, 1, 3600),
	}),
	limits = record({
		-- at most check()'s max_body, which src/config.c derives
		-- from the size of the frames that carry events to handlers
		max_body = int(4194304, 1024),
		handler_timeout_ms = int(5000, 10, 3600 * 1000),
		-- events running at once per worker (each a coroutine)
		handler_concurrency = int(256, 1, 10000),
		handler_memory_mb = int(64, 4, 65536),
		max_queue = int(100000, 1, 1000000000),
		retries = int(5, 0, 1000),
		retry_backoff_ms = list(int(nil, 0, 7 * 86400 * 1000),
		    { 1000, 5000, 30000, 120000, 600000 }),
		-- a fraction is fine: 0.5 keeps keys twelve hours
		dedup_days = num(8, 1 / 86400, 3650),
		shutdown_timeout_ms = int(10000, 0, 3600 * 1000),
	}),
	-- Listener settings: read at start only (a change needs a restart).
	http = record({
		-- 0: one per CPU walua may run on (its affinity), at most 4
		threads = int(0, 0, 64),
		max_connections = int(1024, 1, 65536),
		-- half of max_connections: a provider delivering from a few
		-- addresses can use them all, one address alone only half
		per_ip_connections = int(512, 0, 65536),	-- 0: no limit
		timeout_s = int(30, 1, 3600),
		-- a request head must be complete within this, however
		-- slowly it trickles (libmicrohttpd does not bound it)
		header_timeout_s = int(10, 1, 3600),
		-- a body must arrive within this, however slowly it trickles
		request_timeout_s = int(60, 1, 3600),
	}),
	log_level = enum({ "debug", "info", "warn", "error" }, "info"),
	log_file = optional(path()),
	-- where the providers reach this walua (https://host[/prefix]): the
	-- webhook URLs `walua run setup` gives them are this plus a path
	public_url = optional(str()),
	-- the operator's console (README, "Console"): off when absent
	console = optional(record({
		path = str("/console"),
		users = list(record({
			name = str(),
			-- `walua run console-passwd` prints one
			password_hash = str(),
		}, { "name", "password_hash" })),
	})),
	-- what `walua run setup` makes the providers point at (README,
	-- "Point Insider One / Kapso at walua"); the daemon ignores it
	setup = record({
		insider = list(record({
			phone = str(),			-- the sender, digits
			endpoint = optional(str()),	-- an endpoint's path
			events = maybe_list(enum(INSIDER_EVENTS)),
			client = optional(str()),	-- an oauth2.clients id
		}, { "phone" })),
		kapso = list(record({
			config_id = str(),		-- the WhatsApp config
			endpoint = optional(str()),
			events = maybe_list(str()),
		}, { "config_id" })),
	}),
})

local function fail(where, msg)
	error({ msg = where .. ": " .. msg }, 0)
end

local function absolute(p, dir)
	-- a PostgreSQL URL (database) is not a file
	if p:sub(1, 1) == "/" or dir == nil or p:find("^postgres[ql]*://") then
		return p
	end
	return dir .. "/" .. p
end

local function is_list(t)
	local n = 0
	for _ in pairs(t) do n = n + 1 end
	return n == #t
end

local check

local function copy(v)
	if type(v) ~= "table" then return v end
	local t = {}
	for k, x in pairs(v) do t[k] = copy(x) end
	return t
end

-- v, if within spec's min and max; else raise.
local function in_range(spec, v, where)
	if spec.min and v < spec.min then
		fail(where, "must be at least " .. spec.min)
	end
	if spec.max and v > spec.max then
		fail(where, "must be at most " .. spec.max)
	end
	return v
end

function check(spec, v, where, dir)
	if v == nil then
		if spec.kind == "record" and not spec.optional then
			v = {}
		elseif spec.default ~= nil then
			v = copy(spec.default)
			if spec.kind == "path" then v = absolute(v, dir) end
			return v
		elseif spec.optional then
			return nil
		else
			fail(where, "missing")
		end
	end
	local k = spec.kind
	if k == "address" then
		if v == false and spec.off then return false end
		if type(v) ~= "string" then
			fail(where, "expected \"HOST:PORT\"" .. (spec.off and
			    " or false" or "") .. ", got " .. type(v))
		end
		local host, port = v:match("^(.*):(%d+)$")
		if not host or host == "" or tonumber(port) > 65535 then
			fail(where, "expected HOST:PORT, got '" .. v .. "'")
		end
		return v
	elseif k == "string" or k == "path" then
		if type(v) ~= "string" then
			fail(where, "expected a string, got " .. type(v))
		end
		if v == "" then fail(where, "must not be empty") end
		return k == "path" and absolute(v, dir) or v
	elseif k == "integer" then
		if math.type(v) ~= "integer" then
			if type(v) == "number" and v == math.floor(v) then
				v = math.tointeger(v)
			else
				fail(where, "expected an integer, got " ..
				    (math.type(v) or type(v)))
			end
		end
		return in_range(spec, v, where)
	elseif k == "number" then
		if type(v) ~= "number" or v ~= v then
			fail(where, "expected a number, got " .. type(v))
		end
		return in_range(spec, v, where) + 0.0
	elseif k == "enum" then
		for _, x in ipairs(spec.values) do
			if v == x then return v end
		end
		fail(where, "must be one of " .. table.concat(spec.values, ", ") ..
		    ", got " .. tostring(v))
	elseif k == "list" then
		if type(v) ~= "table" or not is_list(v) then
			fail(where, "expected a list")
		end
		local out = {}
		for i, x in ipairs(v) do
			out[i] = check(spec.of, x, where .. "[" .. i .. "]", dir)
		end
		return out
	elseif k == "record" then
		if type(v) ~= "table" then
			fail(where, "expected a table, got " .. type(v))
		end
		for key in pairs(v) do
			if spec.fields[key] == nil then
				fail(where == "" and tostring(key) or
				    where .. "." .. tostring(key), "unknown key")
			end
		end
		for _, key in ipairs(spec.required) do
			if v[key] == nil then
				fail(where .. "." .. key, "missing")
			end
		end
		local out = {}
		for key, s in pairs(spec.fields) do
			local w = where == "" and key or where .. "." .. key
			out[key] = check(s, v[key], w, dir)
		end
		return out
	end
	error("config.lua: bad spec kind " .. tostring(k))
end

-- Which auth keys each auth type needs; any other key is a mistake.
local auth_keys = {
	bearer = { token = true },
	oauth2 = {},
	kapso = { secret = true },
	meta = { app_secret = true, verify_token = true },
}

-- Auth types this build can check.  A type outside it is refused at load
-- rather than served unauthenticated.
M.supported_auth = { bearer = true, oauth2 = true, kapso = true, meta = true }

-- served on admin_listen only, but never an endpoint's path either
local reserved = { ["/healthz"] = true, ["/metrics"] = true }

local function check_endpoints(c)
	local seen = {}
	for i, ep in ipairs(c.endpoints) do
		local w = "endpoints[" .. i .. "]"
		if ep.path:sub(1, 1) ~= "/" then
			fail(w .. ".path", "must start with '/'")
		end
		if seen[ep.path] or reserved[ep.path] or ep.path == c.oauth2.path then
			fail(w .. ".path", "'" .. ep.path .. "' is already in use")
		end
		seen[ep.path] = true
		local a = ep.auth
		if not M.supported_auth[a.type] then
			fail(w .. ".auth.type", "'" .. a.type ..
			    "' is not supported by this version of walua")
		end
		for need in pairs(auth_keys[a.type]) do
			if a[need] == nil then
				fail(w .. ".auth." .. need, "missing (needed by auth type '" ..
				    a.type .. "')")
			end
		end
		for key in pairs(a) do
			if key ~= "type" and not auth_keys[a.type][key] then
				fail(w .. ".auth." .. key, "not used by auth type '" ..
				    a.type .. "'")
			end
		end
		if (a.type == "kapso" or a.type == "meta") and
		    ep.provider ~= a.type then
			fail(w .. ".auth.type", "auth type '" .. a.type ..
			    "' needs provider '" .. a.type .. "'")
		end
	end
	if c.oauth2.path:sub(1, 1) ~= "/" then
		fail("oauth2.path", "must start with '/'")
	end
	if reserved[c.oauth2.path] then
		fail("oauth2.path", "'" .. c.oauth2.path .. "' is already in use")
	end
	local ids = {}
	for i, cl in ipairs(c.oauth2.clients) do
		if ids[cl.id] then
			fail("oauth2.clients[" .. i .. "].id", "'" .. cl.id ..
			    "' is listed twice")
		end
		ids[cl.id] = true
	end
	for i, ep in ipairs(c.endpoints) do
		if ep.auth.type == "oauth2" and #c.oauth2.clients == 0 then
			fail("endpoints[" .. i .. "].auth.type", "an oauth2 " ..
			    "endpoint needs at least one oauth2.clients entry")
		end
	end
	if c.admin_listen then
		-- the same port on the same (or every) address: one of the two
		-- would take the other's requests, or fail to listen
		local host, port = c.listen:match("^(.*):(%d+)$")
		local ahost, aport = c.admin_listen:match("^(.*):(%d+)$")
		local any = { ["0.0.0.0"] = true, ["::"] = true, ["[::]"] = true }
		if tonumber(port) == tonumber(aport) and (host == ahost or
		    any[host] or any[ahost]) then
			fail("admin_listen", "'" .. c.admin_listen .. "' is the " ..
			    "listen address: give the admin listener its own port")
		end
	end
end

-- The console: a path of its own, users with well-formed hashes.
-- valid_hash is the C check of a hash (src/passwd.c), when given.
local function check_console(c, valid_hash)
	local con = c.console
	if con == nil then return end
	local p = con.path
	if not p:match("^/[%w%-%._~/]*[%w%-%._~]$") or p:find("//", 1, true) then
		fail("console.path", "expected a path like \"/console\" (letters, " ..
		    "digits, - . _ ~ /; no trailing '/'), got '" .. p .. "'")
	end
	local function under(x)
		return x == p or x:sub(1, #p + 1) == p .. "/" or
		    p:sub(1, #x + 1) == x .. "/"
	end
	for i, ep in ipairs(c.endpoints) do
		if under(ep.path) then
			fail("console.path", "'" .. p .. "' overlaps endpoints[" ..
			    i .. "].path '" .. ep.path .. "'")
		end
	end
	if under(c.oauth2.path) or reserved[p] then
		fail("console.path", "'" .. p .. "' overlaps a path in use")
	end
	if #con.users == 0 then
		fail("console.users", "needs at least one { name, password_hash }")
	end
	local names = {}
	for i, u in ipairs(con.users) do
		local w = "console.users[" .. i .. "]"
		if not u.name:match("^[%w%.@_%-]+$") or #u.name > 64 then
			fail(w .. ".name", "expected up to 64 letters, digits, " ..
			    ". @ _ -, got '" .. u.name .. "'")
		end
		if names[u.name] then
			fail(w .. ".name", "'" .. u.name .. "' is listed twice")
		end
		names[u.name] = true
		local it = u.password_hash:match("^pbkdf2%-sha256%$(%d+)%$[%w+/]+=*" ..
		    "%$[%w+/]+=*$")
		if not it or (valid_hash and not valid_hash(u.password_hash)) then
			fail(w .. ".password_hash", "expected pbkdf2-sha256$" ..
			    "<iterations>$<salt>$<hash> (10000 to 10000000 " ..
			    "iterations), as `walua run console-passwd` prints")
		end
	end
end

-- The default events of a setup entry: everything walua decodes.
local KAPSO_EVENTS = { "whatsapp.message.received", "whatsapp.message.sent",
    "whatsapp.message.delivered", "whatsapp.message.read",
    "whatsapp.message.failed" }

-- The endpoint a setup entry names (its path), or the only endpoint that
-- fits when it names none.  fits(ep) says whether an endpoint can serve
-- the entry; what describes them in messages.
local function setup_endpoint(c, entry, w, fits, what)
	if entry.endpoint == nil then
		local found = {}
		for _, ep in ipairs(c.endpoints) do
			if fits(ep) then found[#found + 1] = ep end
		end
		if #found ~= 1 then
			fail(w .. ".endpoint", "missing, and " .. #found ..
			    " endpoints fit (" .. what .. "): name one by its path")
		end
		return found[1]
	end
	for _, ep in ipairs(c.endpoints) do
		if ep.path == entry.endpoint then
			if not fits(ep) then
				fail(w .. ".endpoint", "'" .. ep.path .. "' does " ..
				    "not fit (" .. what .. ")")
			end
			return ep
		end
	end
	fail(w .. ".endpoint", "no endpoint has the path '" .. entry.endpoint ..
	    "'")
end

local function has(list, x)
	for _, v in ipairs(list) do
		if v == x then return true end
	end
	return false
end

-- setup and public_url: every entry resolved to its endpoint, with the
-- defaults filled in, so `walua run setup` only compares.
local function check_setup(c)
	if c.public_url ~= nil then
		local u = c.public_url:gsub("/+$", "")
		if not u:match("^https?://[^/%s?#]+[^%s?#]*$") then
			fail("public_url", "expected http(s)://host[:port][/path], " ..
			    "got '" .. c.public_url .. "'")
		end
		c.public_url = u
	end
	local s = c.setup
	if (#s.insider > 0 or #s.kapso > 0) and c.public_url == nil then
		fail("public_url", "missing (setup needs the URL the providers " ..
		    "reach walua at)")
	end
	local phones, bearer = {}, nil
	for i, e in ipairs(s.insider) do
		local w = "setup.insider[" .. i .. "]"
		local d = e.phone:gsub("[%s%+%-%(%)]", "")
		if not d:match("^%d+$") or #d < 6 or #d > 15 then
			fail(w .. ".phone", "expected the sender's number, got '" ..
			    e.phone .. "'")
		end
		if phones[d] then fail(w .. ".phone", "'" .. d .. "' is listed twice") end
		phones[d], e.phone = true, d
		local ep = setup_endpoint(c, e, w, function(x)
			return x.provider == "insider" and (x.auth.type == "bearer" or
			    x.auth.type == "oauth2")
		end, "provider insider, auth bearer or oauth2")
		e.endpoint = ep.path
		if ep.auth.type == "bearer" then
			-- Insider One's v1 settings: one URL per account
			for _, k in ipairs({ "events", "client" }) do
				if e[k] ~= nil then
					fail(w .. "." .. k, "not used with a bearer " ..
					    "endpoint (Insider One's v1 settings take " ..
					    "a URL and a token only)")
				end
			end
			if bearer and bearer ~= ep.path then
				fail(w .. ".endpoint", "bearer endpoints '" .. bearer ..
				    "' and '" .. ep.path .. "': Insider One keeps " ..
				    "one v1 webhook per account")
			end
			bearer = ep.path
		else
			e.events = e.events or { "sent", "delivered", "read",
			    "failed", "reply" }
			if not has(e.events, "reply") then
				fail(w .. ".events", "a conversational webhook " ..
				    "must include \"reply\"")
			end
			if e.client == nil then
				e.client = c.oauth2.clients[1].id
			else
				local known = false
				for _, cl in ipairs(c.oauth2.clients) do
					known = known or cl.id == e.client
				end
				if not known then
					fail(w .. ".client", "no oauth2.clients entry " ..
					    "has the id '" .. e.client .. "'")
				end
			end
		end
	end
	local configs = {}
	for i, e in ipairs(s.kapso) do
		local w = "setup.kapso[" .. i .. "]"
		if configs[e.config_id] then
			fail(w .. ".config_id", "'" .. e.config_id .. "' is listed twice")
		end
		configs[e.config_id] = true
		e.endpoint = setup_endpoint(c, e, w, function(x)
			return x.provider == "kapso" and x.auth.type == "kapso"
		end, "provider kapso, auth kapso").path
		e.events = e.events or copy(KAPSO_EVENTS)
		if #e.events == 0 then fail(w .. ".events", "must not be empty") end
	end
end

-- Check and normalize t, the table a config file returned.  file names the
-- file in messages; dir is the folder relative paths are taken from;
-- max_body is the largest limits.max_body allowed.
-- What a configuration that loads may still lack: an endpoint whose
-- provider walua.whatsapp cannot answer (no send credentials).  Lines,
-- for `walua check` ("" when there is nothing to say).
function M.warnings(c)
	local out, seen = {}, {}
	local need = {
		insider = { "insider.auth_key, or insider.client_id and " ..
		    "insider.client_secret", function()
			return c.insider.auth_key ~= nil or (c.insider.client_id
			    ~= nil and c.insider.client_secret ~= nil)
		end },
		kapso = { "kapso.api_key", function()
			return c.kapso.api_key ~= nil
		end },
		meta = { "meta.access_token", function()
			return c.meta.access_token ~= nil
		end },
	}
	for _, e in ipairs(c.endpoints) do
		local n = need[e.provider]
		if n and not seen[e.provider] and not n[2]() then
			seen[e.provider] = true
			out[#out + 1] = "warning: endpoint " .. e.path .. " (" ..
			    e.provider .. "): no send credentials (" .. n[1] ..
			    "): walua.whatsapp cannot reply to its events"
		end
	end
	return table.concat(out, "\n")
end

function M.check(t, file, dir, max_body, valid_hash, check_url)
	local ok, res = pcall(function()
		if type(t) ~= "table" then
			fail("config", "the file must return a table, got " .. type(t))
		end
		local c = check(schema, t, "", dir)
		check_endpoints(c)
		check_setup(c)
		check_console(c, valid_hash)
		if c.database:find("^postgres[ql]*://") then
			local err = check_url(c.database)
			if err then fail("database", err) end
		end
		if c.limits.max_body > max_body then
			fail("limits.max_body", "must be at most " .. max_body ..
			    " (every event of a body must fit the frame that " ..
			    "hands it to a handler)")
		end
		return c
	end)
	if ok then return res end
	if type(res) == "table" then error(file .. ": " .. res.msg, 0) end
	error(res, 0)
end

return M
