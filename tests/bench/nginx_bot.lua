-- nginx_bot.lua - lua-nginx-module's side of the benchmark: the work of
-- walua's bench handler done inline in nginx's worker.  Bearer check,
-- lua-cjson decode, every message and status of the Meta envelope taken
-- out as an event, messages routed by three text rules (walua_bot.lua's),
-- then 200 with the same answer walua gives.  Nothing is stored.
local cjson = require "cjson.safe"

local M = {}
local expected -- "Bearer <token>", from nginx.conf's set $bench_token
local sent = 0

local function rule_menu(ev)
	local reply = "Hi " .. (ev.name or "there") ..
	    "! 1) Where is my order?  2) Talk to us"
	sent = sent + #reply
end

local function rule_order(ev, number)
	local reply = "Order " .. number .. " is on its way to " .. ev.from
	sent = sent + #reply
end

local function fallback(ev)
	local reply = "Sorry, I did not understand \"" ..
	    (ev.text or ""):sub(1, 40) .. "\". Write menu."
	sent = sent + #reply
end

local RULES = { { "^menu", rule_menu }, { "^order%s*(%d*)", rule_order } }

local function route(ev)
	local text = ev.text
	if text then
		for i = 1, #RULES do
			local r = RULES[i]
			local a, b, cap = text:find(r[1])
			if a then
				return r[2](ev, cap)
			end
		end
	end
	return fallback(ev)
end

local function reply(status, body)
	ngx.status = status
	ngx.header["Content-Type"] = "application/json"
	ngx.print(body)
	return ngx.exit(status)
end

function M.handle()
	if ngx.req.get_method() ~= "POST" then
		return reply(200, '{"ok":true,"events":0}')
	end
	expected = expected or ("Bearer " .. ngx.var.bench_token)
	if ngx.var.http_authorization ~= expected then
		return reply(401, '{"ok":false,"error":"unauthorized"}')
	end
	ngx.req.read_body()
	local body = ngx.req.get_body_data()
	if not body then
		return reply(400, '{"ok":false,"error":"no body"}')
	end
	local doc = cjson.decode(body)
	if type(doc) ~= "table" then
		return reply(400, '{"ok":false,"error":"not a JSON object"}')
	end
	local n = 0
	for _, entry in ipairs(type(doc.entry) == "table" and doc.entry or {}) do
		for _, ch in ipairs(type(entry.changes) == "table" and
		    entry.changes or {}) do
			local v = type(ch.value) == "table" and ch.value or {}
			local contact = type(v.contacts) == "table" and
			    v.contacts[1] or nil
			local name = contact and type(contact.profile) == "table" and
			    contact.profile.name or nil
			for _, m in ipairs(type(v.messages) == "table" and
			    v.messages or {}) do
				n = n + 1
				route({ kind = "message", type = m.type,
				    from = m.from, name = name,
				    message_id = m.id,
				    text = type(m.text) == "table" and
				    m.text.body or nil })
			end
			for _, s in ipairs(type(v.statuses) == "table" and
			    v.statuses or {}) do
				n = n + 1 -- no status rules, as in walua_bot.lua
			end
		end
	end
	return reply(200, '{"ok":true,"events":' .. n .. ',"duplicates":0}')
end

return M
