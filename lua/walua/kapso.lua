-- walua/kapso.lua - Kapso's webhook management API.
--
--   kapso.webhooks.list(config_id [, { url_cont, active, page, per_page }])
--     -> records (every page unless page is given), meta
--   kapso.webhooks.get(config_id, id) -> record
--   kapso.webhooks.create(config_id, spec) -> record
--   kapso.webhooks.update(config_id, id, changes) -> record
--   kapso.webhooks.delete(config_id, id) -> true
--
-- Calls go to <kapso.api_url>/whatsapp_configs/{config_id}/whatsapp_webhooks
-- with X-API-Key; bodies are wrapped in "whatsapp_webhook" and answers come
-- in "data".  A spec's fields pass through as Kapso names them (url,
-- secret_key, events, active, headers, retry_config, buffer_*,
-- inactivity_minutes, kind, payload_version); update sends only what it is
-- given.  Failures are nil, err (status, message: Kapso's error, then its
-- errors[], then its message).

local http = require "walua.http"
local json = require "walua.json"
local settings = require "walua.settings"

local M = { webhooks = {} }

local FIELDS = { url = true, secret_key = true, events = true, active = true,
    headers = true, retry_config = true, buffer_enabled = true,
    buffer_window_seconds = true, max_buffer_size = true,
    buffer_events = true, inactivity_minutes = true, kind = true,
    payload_version = true }

local function fail(msg, status)
	return http.error(status, nil, msg)
end

local urlencode = http.urlencode

local function provider_error(res)
	local j = type(res.json) == "table" and res.json or {}
	local parts = {}
	if type(j.error) == "string" then parts[#parts + 1] = j.error end
	if type(j.errors) == "table" then
		for _, e in ipairs(j.errors) do parts[#parts + 1] = tostring(e) end
	end
	if type(j.message) == "string" then parts[#parts + 1] = j.message end
	local msg = #parts > 0 and table.concat(parts, ": ") or
	    (res.body ~= "" and res.body:sub(1, 300)) or ("HTTP " .. res.status)
	return fail(msg, res.status)
end

local function base(config_id)
	local c = settings.kapso or {}
	if not c.api_key then
		return nil, "kapso.api_key is not configured"
	end
	if type(config_id) ~= "string" or config_id == "" then
		return nil, "config_id must be the WhatsApp config's id"
	end
	return (c.api_url:gsub("/+$", "")) .. "/whatsapp_configs/" ..
	    urlencode(config_id) .. "/whatsapp_webhooks", c.api_key
end

local function call(method, url, key, body)
	local res, err = http.request{ method = method, url = url, api = "kapso",
	    headers = { ["X-API-Key"] = key, Accept = "application/json" },
	    json = body }
	if not res then return nil, err end
	if res.status < 200 or res.status > 299 then
		return provider_error(res)
	end
	return res
end

local function check_spec(spec)
	if type(spec) ~= "table" then return "spec must be a table" end
	for k in pairs(spec) do
		if not FIELDS[k] then return "unknown field '" .. tostring(k) .. "'" end
	end
	if spec.events ~= nil and type(spec.events) ~= "table" then
		return "events must be a list"
	end
	if spec.url ~= nil and (type(spec.url) ~= "string" or
	    not spec.url:match("^https?://")) then
		return "url must be an http(s) URL"
	end
end

local function wrap(spec)
	local w = {}
	for k, v in pairs(spec) do w[k] = v end
	if type(w.events) == "table" then
		local e = {}
		for i, v in ipairs(w.events) do e[i] = v end
		w.events = json.array(e)
	end
	return { whatsapp_webhook = w }
end

local function data(res)
	local j = type(res.json) == "table" and res.json or {}
	return j.data
end

function M.webhooks.list(config_id, opts)
	local url, key = base(config_id)
	if not url then return fail(key) end
	opts = opts or {}
	local q = {}
	if opts.url_cont then q[#q + 1] = "q[url_cont]=" .. urlencode(opts.url_cont) end
	if opts.active ~= nil then
		q[#q + 1] = "q[active_eq]=" .. tostring(opts.active == true)
	end
	local per_page = opts.per_page or 100
	local out, meta = {}, nil
	local page = opts.page or 1
	for _ = 1, 50 do		-- at most 5,000 webhooks: plenty
		local qs = table.concat(q, "&")
		local res, err = call("GET", url .. "?page=" .. page ..
		    "&per_page=" .. per_page .. (qs ~= "" and "&" .. qs or ""),
		    key)
		if not res then return nil, err end
		local j = type(res.json) == "table" and res.json or {}
		for _, w in ipairs(type(j.data) == "table" and j.data or {}) do
			out[#out + 1] = w
		end
		meta = j.meta
		if opts.page or type(meta) ~= "table" or
		    (tonumber(meta.total_pages) or 1) <= page then
			break
		end
		page = page + 1
	end
	return json.array(out), meta
end

function M.webhooks.get(config_id, id)
	local url, key = base(config_id)
	if not url then return fail(key) end
	if type(id) ~= "string" or id == "" then return fail("id is required") end
	local res, err = call("GET", url .. "/" .. urlencode(id), key)
	if not res then return nil, err end
	return data(res)
end

function M.webhooks.create(config_id, spec)
	local url, key = base(config_id)
	if not url then return fail(key) end
	local bad = check_spec(spec)
	if bad then return fail(bad) end
	if spec.url == nil then return fail("url is required") end
	local res, err = call("POST", url, key, wrap(spec))
	if not res then return nil, err end
	return data(res)
end

function M.webhooks.update(config_id, id, changes)
	local url, key = base(config_id)
	if not url then return fail(key) end
	if type(id) ~= "string" or id == "" then return fail("id is required") end
	local bad = check_spec(changes)
	if bad then return fail(bad) end
	if next(changes) == nil then return fail("nothing to change") end
	local res, err = call("PATCH", url .. "/" .. urlencode(id), key,
	    wrap(changes))
	if not res then return nil, err end
	return data(res)
end

function M.webhooks.delete(config_id, id)
	local url, key = base(config_id)
	if not url then return fail(key) end
	if type(id) ~= "string" or id == "" then return fail("id is required") end
	local res, err = call("DELETE", url .. "/" .. urlencode(id), key)
	if not res then return nil, err end
	return true
end

return M
