-- walua.router - route events to handler functions by simple rules.
--
--	local bot = require("walua.router").new()
--	bot:text("^%s*menu", function(ev) ... end)
--	return bot
--
-- A router is a handler table: the host finds no on_<kind> in it and calls
-- its on_event for every event.  Rules are tried in a fixed order per kind
-- and the first match wins; an event that no rule matches is done.
--	message: reply, text, type, on("message"), fallback
--	status:  status, error, on("status")
--	error:   error, on("error")
--	other:   on(kind)
-- Rules are checked when added, so a mistake fails the script at load
-- (walua check, SIGHUP) instead of failing every event later.
--
-- Handler scripts run in a sandbox that forbids new globals: locals only.

local router = { VERSION = 1 }

-- Private key for the rule lists, so no field name can collide with them
-- or with the on_<kind> names the host looks up.
local RULES = {}

-- The event kinds (README, Events); on() refuses others, so a typo such as
-- "messages" is an error at load rather than a rule that silently never
-- fires.
local KINDS = {
	message = true, status = true, accepted = true, error = true,
	template = true, conversation = true, unknown = true,
}

local methods = {}
-- hidden: a script must not change the methods every router shares
local meta = { __index = methods, __metatable = false }

-- Raise at the caller of the method, so the message names the line of
-- the handler script: level 3 from a method, 4 from check().
local function argerror(method, what, level)
	error("router:" .. method .. ": " .. what, level or 3)
end

local function check(self, method, fn)
	if type(self) ~= "table" or rawget(self, RULES) == nil then
		argerror(method, "call it as bot:" .. method .. "(...)", 4)
	end
	if type(fn) ~= "function" then
		argerror(method, "handler must be a function, got " .. type(fn),
		    4)
	end
	return rawget(self, RULES)
end

local function add(list, key, fn)
	list[#list + 1] = { key = key, fn = fn }
end

-- Error codes arrive as JSON numbers (maybe floats after decoding) or,
-- from some providers, as strings: compare by numeric value when both
-- sides are numeric.
local function same_code(a, b)
	if a == nil then return false end
	if a == b then return true end
	local na, nb = tonumber(a), tonumber(b)
	return na ~= nil and na == nb
end

local function has_code(ev, code)
	if same_code(ev.code, code) then return true end
	if type(ev.errors) == "table" then
		for _, e in ipairs(ev.errors) do
			if type(e) == "table" and same_code(e.code, code) then
				return true
			end
		end
	end
	return false
end

function methods:text(pattern, fn)
	local r = check(self, "text", fn)
	if type(pattern) ~= "string" then
		argerror("text", "pattern must be a string, got " ..
		    type(pattern))
	end
	add(r.text, pattern, fn)
	return self
end

function methods:reply(id, fn)
	local r = check(self, "reply", fn)
	if type(id) ~= "string" then
		argerror("reply", "id must be a string, got " .. type(id))
	end
	add(r.reply, id, fn)
	return self
end

function methods:type(t, fn)
	local r = check(self, "type", fn)
	if type(t) ~= "string" then
		argerror("type", "type must be a string, got " .. type(t))
	end
	add(r.type, t, fn)
	return self
end

function methods:status(s, fn)
	local r = check(self, "status", fn)
	if type(s) ~= "string" then
		argerror("status", "status must be a string, got " .. type(s))
	end
	add(r.status, s, fn)
	return self
end

function methods:error(code, fn)
	local r = check(self, "error", fn)
	if type(code) ~= "number" and type(code) ~= "string" then
		argerror("error", "code must be a number or a string, got " ..
		    type(code))
	end
	add(r.error, code, fn)
	return self
end

function methods:on(kind, fn)
	local r = check(self, "on", fn)
	if type(kind) ~= "string" then
		argerror("on", "kind must be a string, got " .. type(kind))
	end
	if not KINDS[kind] then
		argerror("on", "unknown event kind '" .. kind .. "'")
	end
	add(r.on[kind], kind, fn)
	return self
end

function methods:fallback(fn)
	local r = check(self, "fallback", fn)
	add(r.fallback, nil, fn)
	return self
end

-- The matchers below return the handler of the first matching rule, and
-- for text rules also string.find's results (to pass on the captures);
-- dispatch makes the call.

local function message(r, ev)
	for _, rule in ipairs(r.reply) do
		if ev.reply_id == rule.key then return rule.fn end
	end
	if type(ev.text) == "string" then
		for _, rule in ipairs(r.text) do
			local m = table.pack(string.find(ev.text, rule.key))
			if m[1] then return rule.fn, m end
		end
	end
	for _, rule in ipairs(r.type) do
		if ev.type == rule.key then return rule.fn end
	end
	return nil
end

local function errors(r, ev)
	for _, rule in ipairs(r.error) do
		if has_code(ev, rule.key) then return rule.fn end
	end
	return nil
end

local function status(r, ev)
	for _, rule in ipairs(r.status) do
		if rule.key == "*" or ev.status == rule.key then
			return rule.fn
		end
	end
	return errors(r, ev)
end

local specific = { message = message, status = status, error = errors }

local function match(r, ev)
	local kind = ev.kind
	local f = specific[kind]
	if f then
		local fn, m = f(r, ev)
		if fn then return fn, m end
	end
	local on = KINDS[kind] and r.on[kind][1]
	if on then return on.fn end
	-- Only messages fall back: answering every delivery receipt or
	-- provider error would make a bot spam its users.
	if kind == "message" and r.fallback[1] then
		return r.fallback[1].fn
	end
	return nil
end

local function dispatch(r, ev)
	if type(ev) ~= "table" then
		-- Level 2: on_event tail-calls dispatch, so that is its caller.
		error("router: event must be a table, got " .. type(ev), 2)
	end
	local fn, m = match(r, ev)
	if fn == nil then return nil end
	if m then
		-- m is string.find's start, end, captures...: pass the captures
		return fn(ev, table.unpack(m, 3, m.n))
	end
	return fn(ev)
end

function router.new()
	local r = {
		reply = {}, text = {}, type = {}, status = {}, error = {},
		fallback = {}, on = {},
	}
	for kind in pairs(KINDS) do r.on[kind] = {} end
	return setmetatable({
		[RULES] = r,
		on_event = function(ev) return dispatch(r, ev) end,
	}, meta)
end

return router
