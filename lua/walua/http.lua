-- walua/http.lua - outbound HTTP for handlers and admin scripts.
--
--   http.request{ method, url, headers, body | json, timeout_ms }
--     -> { status, headers, body, json } | nil, err
--   http.get(url [, opts]), http.post(url, body_or_table [, opts])
--
-- Any answer is a result, whatever its status (check res.status); err is
-- for no answer: connection refused, timeout, bad URL, answer too large.
-- Headers of the answer are keyed by lower-case name; json is the decoded
-- body when the answer says it is JSON.  In a handler the timeout never
-- outlasts the handler's remaining budget.  The C core is walua.httpc.

local core = require "walua.httpc"
local json = require "walua.json"

local http = { error = core.error }

-- Percent-encode s for a URL path segment, query value or form field
-- (RFC 3986 unreserved characters stay).
function http.urlencode(s)
	return (tostring(s):gsub("[^%w%-%._~]", function(c)
		return string.format("%%%02X", c:byte())
	end))
end

function http.request(opts)
	if type(opts) ~= "table" then
		error("http.request: expected a table, got " .. type(opts), 2)
	end
	local req = {}
	for k, v in pairs(opts) do req[k] = v end
	if opts.json ~= nil then
		if opts.body ~= nil then
			error("http.request: give body or json, not both", 2)
		end
		req.json = nil
		req.body = json.encode(opts.json)
		local h = {}
		for k, v in pairs(opts.headers or {}) do h[k] = v end
		local has = false
		for k in pairs(h) do
			if k:lower() == "content-type" then has = true end
		end
		if not has then h["Content-Type"] = "application/json" end
		req.headers = h
	end
	local res, err = core.request(req)
	if not res then return nil, err end
	local ct = res.headers["content-type"]
	if ct and ct:find("json", 1, true) and res.body ~= "" then
		res.json = json.decode(res.body)
	end
	return res
end

function http.get(url, opts)
	local o = {}
	for k, v in pairs(opts or {}) do o[k] = v end
	o.url, o.method = url, "GET"
	return http.request(o)
end

function http.post(url, body, opts)
	local o = {}
	for k, v in pairs(opts or {}) do o[k] = v end
	o.url, o.method = url, "POST"
	if type(body) == "table" then o.json = body else o.body = body end
	return http.request(o)
end

return http
