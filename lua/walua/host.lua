-- walua/host.lua - the sandbox handlers run in, and the call of a handler.
--
-- Run once per worker state by src/lhost.c, with the full standard
-- libraries still in place and C helpers as its argument; it keeps what
-- it needs in locals, builds the read-only globals handlers see, and
-- returns { load = ..., handle = ... }.  After it returns, the state's own
-- globals are never used by handler code: every script runs with its own
-- environment whose __index is the sandbox's globals.
--
-- What handlers get (README, Handler scripts and the Lua API): base
-- functions without dofile, loadfile, load of bytecode, collectgarbage's
-- control options; string (no dump), table, math, utf8, coroutine,
-- os.time/clock/date/difftime; print (to the log); require for walua.*,
-- cjson and modules beside the handler.

local C = ...		-- log, readsrc, decode, cjson, store: see src/lhost.c

local G = _G
local load, pcall, error, type, setmetatable, rawset, rawget, tostring =
    G.load, G.pcall, G.error, G.type, G.setmetatable, G.rawset, G.rawget,
    G.tostring
local select, ipairs, pairs, next = G.select, G.ipairs, G.pairs, G.next
local concat, format, match, gsub, sub, rep = table.concat, string.format,
    string.match, string.gsub, string.sub, string.rep
local min = math.min

-- Tables a script may not write, even with rawset: the read-only views
-- and the script environments (weak: they go when their scripts go).
local protected = setmetatable({}, { __mode = "k" })

-- The view of each shared table (weak keys: a view lives while its
-- table does), so one table always has one view.
local views = setmetatable({}, { __mode = "k" })

local function readonly_error(name)
	return function(_, k)
		error(format("%s is read-only (assigning '%s')", name,
		    tostring(k)), 2)
	end
end

-- A read-only view of t: reads pass through, writes raise, and the
-- metatable is hidden (lighttpd's "lua table is read-only").  A view is
-- only as read-only as every way into it, so none hands out t or a table
-- inside it: reads and pairs() give views of nested tables, # and ipairs
-- see t's length, next() and rawget() see the (empty) view itself.
-- flat: t holds no tables now or later (the standard libraries), so its
-- reads may go straight to t, the fast path for string methods.
local function readonly(t, name, flat)
	local v = views[t]
	if v then return v end
	local index
	if flat then
		index = t
	else
		index = function(_, k)
			local x = t[k]
			if type(x) == "table" then
				return readonly(x, name .. "." .. tostring(k))
			end
			return x
		end
	end
	v = setmetatable({}, {
		__index = index,
		__newindex = readonly_error(name),
		__pairs = function()
			return function(_, k)
				local x
				k, x = next(t, k)
				if type(x) == "table" then
					x = readonly(x, name .. "." .. tostring(k))
				end
				return k, x
			end, nil, nil
		end,
		__len = function() return #t end,
		__metatable = false,
	})
	views[t] = v
	protected[v] = true
	return v
end

local function copy(t, keys)
	local out = {}
	for _, k in ipairs(keys) do out[k] = t[k] end
	return out
end

local strlib = {}
for k, v in pairs(string) do
	if k ~= "dump" then strlib[k] = v end
end
-- Scripts share the string metatable: methods on strings see the same
-- library as `string` (no dump), and the metatable is hidden.
getmetatable("").__index = strlib
getmetatable("").__metatable = false

local safe = {
	assert = assert, error = error, ipairs = ipairs, next = next,
	pairs = pairs, pcall = pcall, rawequal = rawequal, rawget = rawget,
	rawlen = rawlen, select = select,
	setmetatable = setmetatable, getmetatable = getmetatable,
	tonumber = tonumber, tostring = tostring, type = type, xpcall = xpcall,
	_VERSION = _VERSION,
	string = readonly(strlib, "string", true),
	table = readonly(table, "table", true),
	math = readonly(math, "math", true),
	utf8 = readonly(utf8, "utf8", true),
	coroutine = readonly(coroutine, "coroutine", true),
	os = readonly(copy(os, { "time", "clock", "date", "difftime" }), "os",
	    true),
}

-- collectgarbage: reading the count and asking for a collection are fine;
-- stopping or retuning the collector is not.
local gc = collectgarbage
safe.collectgarbage = function(opt, ...)
	opt = opt or "collect"
	if opt == "count" or opt == "collect" or opt == "step" or
	    opt == "isrunning" then
		return gc(opt, ...)
	end
	error("collectgarbage('" .. tostring(opt) .. "') is not allowed", 2)
end

-- rawset, but never on a read-only view or a script's environment.
safe.rawset = function(t, k, v)
	if protected[t] then
		error("rawset: this table is read-only", 2)
	end
	return rawset(t, k, v)
end

safe.print = function(...)
	local n = select("#", ...)
	local parts = {}
	for i = 1, n do parts[i] = tostring((select(i, ...))) end
	C.log("info", concat(parts, "\t"))
end

-- The modules of the sandbox, loaded once per state.
local loaded = {}
local preload = {}		-- name -> function returning the module
local private = { ["walua.host"] = true, ["walua.config"] = true }

preload["walua.log"] = function() return readonly(C.logmod, "walua.log") end
preload["walua.store"] = function() return readonly(C.store, "walua.store") end
preload["walua.httpc"] = function() return readonly(C.httpc, "walua.httpc") end
preload["walua.crypto"] = function() return readonly(C.crypto, "walua.crypto") end
-- walua.whatsapp's journal and pace: for walua's own modules only
preload["walua.outbound"] = function(internal)
	if not internal then error("module 'walua.outbound' not found", 3) end
	return readonly(C.outbound, "walua.outbound")
end
-- walua.sleep(ms): in a handler it yields (other events run meanwhile)
preload["walua"] = function()
	return readonly({ sleep = C.httpc.wait }, "walua")
end
-- The running configuration (set by the worker), read-only.  walua's own
-- modules (walua.insider, walua.kapso) read the credentials they call
-- the providers with; handlers see every secret masked, as the admin
-- scripts print them: they know a credential is set, never its value.
local settings, masked
local SECRET = { token = true, secret = true, app_secret = true,
    verify_token = true, client_secret = true, refresh_token = true,
    auth_key = true, api_key = true, access_token = true,
    password_hash = true }

local function mask(t)
	local out = {}
	for k, v in pairs(t) do
		if type(v) == "table" then
			v = mask(v)
		elseif SECRET[k] and type(v) == "string" and v ~= "" then
			v = sub(v, 1, min(4, #v // 4)) .. rep("*", 8)
		end
		out[k] = v
	end
	return out
end

preload["walua.settings"] = function(internal)
	if internal then
		return readonly(settings or {}, "walua.settings")
	end
	masked = masked or mask(settings or {})
	return readonly(masked, "walua.settings")
end

local cj = C.cjson	-- private lua-cjson: depth limits fixed by the C core
preload["cjson"] = function()
	return readonly({ encode = cj.encode, decode = cj.decode,
	    null = cj.null, _NAME = "cjson", _VERSION = cj._VERSION }, "cjson")
end

local make_env

-- Compile src (text only) as chunk name "@path" in a fresh environment
-- and run it; returns its result.  Raises on error.
local function run_chunk(path, src, dir)
	local env, seal = make_env(dir)
	local fn, err = load(src, "@" .. path, "t", env)
	if not fn then error(err, 0) end
	local res = fn()
	seal()
	return res
end

-- require for chunks from dir.  walua's modules and cjson are shared by
-- every script of the state, so a script gets a read-only view of them;
-- a module beside the handler is the script's own (see the README on
-- what module-level state means).
local function require_from(dir)
	local internal = dir == "lua/walua"
	return function(name)
		if type(name) ~= "string" then
			error("require: module name must be a string", 2)
		end
		local key = name
		if name == "walua.settings" and internal then
			key = "walua.settings (internal)"
		end
		local m = loaded[key]
		if m ~= nil then return m end
		if preload[name] then
			m = preload[name](internal)
		elseif match(name, "^walua%.[%w_]+$") and not private[name] then
			local path = "lua/" .. gsub(name, "%.", "/") .. ".lua"
			local src = C.readsrc(path)
			if not src then
				error("module '" .. name .. "' not found", 2)
			end
			m = run_chunk(path, src, "lua/walua")
			if type(m) == "table" then m = readonly(m, name) end
		elseif match(name, "^[%w_]+$") or match(name, "^[%w_]+%.[%w_.]+$") then
			local path = dir .. "/" .. gsub(name, "%.", "/") .. ".lua"
			key = path
			m = loaded[key]
			if m ~= nil then return m end
			local src = C.readsrc(path)
			if not src then
				error("module '" .. name .. "' not found (looked for '" ..
				    path .. "')", 2)
			end
			m = run_chunk(path, src, dir)
		else
			error("module '" .. name .. "' not found", 2)
		end
		if m == nil then m = true end
		loaded[key] = m
		return m
	end
end

-- A script's environment: globals may be defined while the chunk loads;
-- afterwards an assignment to an undeclared global raises, so state
-- cannot leak between events through globals.
-- (Globals live in `store`; the environment itself stays empty, so every
-- assignment, to a new or an existing name, goes through __newindex.)
function make_env(dir)
	local sealed = false
	local env = {}
	local store = setmetatable({}, { __index = safe })
	store._G = env
	store.require = require_from(dir)
	store.load = function(chunk, name, mode, e)
		if mode ~= nil and mode ~= "t" then
			error("load: only text chunks are allowed", 2)
		end
		if type(chunk) == "string" and chunk:byte(1) == 27 then
			return nil, "load: binary chunks are not allowed"
		end
		return load(chunk, name, "t", e or env)
	end
	setmetatable(env, {
		__index = store,
		__newindex = function(_, k, v)
			if sealed then
				error("assignment to global '" .. tostring(k) ..
				    "' while handling an event (use a local)", 2)
			end
			rawset(store, k, v)
		end,
		__metatable = false,
	})
	protected[env] = true
	return env, function() sealed = true end
end

local H = {}
local handlers = {}

-- The configuration walua.settings shows (its checked JSON).
function H.set_settings(json)
	settings, masked = C.decode(json), nil
end

-- A fresh sandbox environment for chunks from dir (the test runner runs
-- its files in one, so they see exactly what handlers see).
function H.new_env(dir)
	return (make_env(dir or "."))
end

-- Load the handler script at path (its text is src).  Returns true, or
-- raises with the reason (file:line included by the compiler).
function H.load(path, src)
	local dir = match(path, "^(.*)/[^/]*$") or "."
	local h = run_chunk(path, src, dir)
	local t = type(h)
	if t ~= "function" and t ~= "table" then
		error(path .. ": a handler script must return a function or a " ..
		    "table of on_* functions, got " .. t, 0)
	end
	handlers[#handlers + 1] = h
	return true
end

-- Call every handler for the event (a JSON text); raise on failure.
function H.handle(json, id, attempt, stale)
	local ev = C.decode(json)
	ev.id, ev.attempt = id, attempt
	if stale then ev.stale = true end
	for i = 1, #handlers do
		local h = handlers[i]
		if type(h) == "function" then
			h(ev)
		else
			local fn = h["on_" .. ev.kind] or h.on_event
			if fn ~= nil then fn(ev) end
		end
	end
end

return H
