-- walua/console.lua - the operator's console: its pages and JSON API.
--
-- Loaded by the C core (src/lb_console.c) into a Lua state of the HTTP
-- side, with C: stats, list, show (the inbox, read-only), runtime (queue,
-- workers, reloads, per-minute counts), log, json, inbox (walua.inbox,
-- for replays).  src/console.c has already checked the session and, for
-- a POST, its CSRF token; handle(req) returns status, content type, body
-- and an optional Location.
--
-- Everything that comes from outside (event bodies, ids, errors, user
-- names, query arguments) goes through esc() before it reaches HTML: the
-- templates below have {{name}} (escaped) and {{{name}}} (HTML built
-- here, from escaped parts) only.

local C = ...
local json = C.json

local M = {}

-- HTML-escape everything that is not plainly safe.
local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
    ['"'] = "&quot;", ["'"] = "&#39;", ["`"] = "&#96;", ["="] = "&#61;" }
local function esc(v)
	if v == nil then return "" end
	return (tostring(v):gsub("[&<>\"'`=]", ESC))
end
M.esc = esc

-- render("<p>{{a}} {{{b}}}</p>", { a = "x<y", b = "<i>ok</i>" })
local function render(tpl, vars)
	return (tpl:gsub("{{({?)([%w_]+)}}}?", function(raw, name)
		local v = vars[name]
		if raw == "{" then return v == nil and "" or tostring(v) end
		return esc(v)
	end))
end
M.render = render

local function urlencode(s)
	return (tostring(s):gsub("[^%w%-%._~]", function(c)
		return string.format("%%%02X", c:byte())
	end))
end

local function urldecode(s)
	s = s:gsub("+", " ")
	return (s:gsub("%%(%x%x)", function(h)
		return string.char(tonumber(h, 16))
	end))
end

local function parse_form(s)
	local out = {}
	for pair in (s or ""):gmatch("[^&]+") do
		local k, v = pair:match("^([^=]*)=?(.*)$")
		out[urldecode(k)] = urldecode(v)
	end
	return out
end

local function query_string(t, keys)
	local parts = {}
	for _, k in ipairs(keys) do
		local v = t[k]
		if v ~= nil and v ~= "" then
			parts[#parts + 1] = urlencode(k) .. "=" .. urlencode(v)
		end
	end
	return #parts > 0 and ("?" .. table.concat(parts, "&")) or ""
end

local function iso(ms)
	if not ms then return "" end
	return os.date("!%Y-%m-%d %H:%M:%S UTC", ms // 1000)
end

local function now_ms()
	return os.time() * 1000
end

local function age(ms)
	if not ms then return "none" end
	local s = math.max(0, (now_ms() - ms) // 1000)
	if s < 60 then return s .. " s" end
	if s < 3600 then return (s // 60) .. " min " .. (s % 60) .. " s" end
	if s < 86400 then return (s // 3600) .. " h " .. (s % 3600 // 60) .. " min" end
	return (s // 86400) .. " d " .. (s % 86400 // 3600) .. " h"
end

-- JSON, indented, keys sorted: what a human reads.
local function pretty(v, ind)
	ind = ind or ""
	local t = type(v)
	if t == "table" then
		local n, keys = 0, {}
		for k in pairs(v) do
			n = n + 1
			keys[#keys + 1] = k
		end
		local inner = ind .. "  "
		local parts = {}
		if n > 0 and n == #v then
			for i = 1, n do parts[i] = inner .. pretty(v[i], inner) end
			return "[\n" .. table.concat(parts, ",\n") .. "\n" .. ind .. "]"
		end
		if n == 0 then return "{}" end
		table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
		for i, k in ipairs(keys) do
			parts[i] = inner .. json.encode(tostring(k)) .. ": " ..
			    pretty(v[k], inner)
		end
		return "{\n" .. table.concat(parts, ",\n") .. "\n" .. ind .. "}"
	elseif v == json.null then
		return "null"
	end
	return json.encode(v)
end

local function pretty_text(text)
	local ok, v = pcall(json.decode, text)
	if not ok then return text end
	return pretty(v)
end

-- JSON for the API: like cjson's, but a table marked by list() is an
-- array even when empty (cjson writes {} for every empty table).
local LIST = {}
local function list(t)
	return setmetatable(t, LIST)
end

local function tojson(v)
	if type(v) ~= "table" then return json.encode(v) end
	local parts = {}
	if getmetatable(v) == LIST then
		for i, x in ipairs(v) do parts[i] = tojson(x) end
		return "[" .. table.concat(parts, ",") .. "]"
	end
	local n = 0
	for _ in pairs(v) do n = n + 1 end
	if n > 0 and n == #v then
		for i, x in ipairs(v) do parts[i] = tojson(x) end
		return "[" .. table.concat(parts, ",") .. "]"
	end
	for k, x in pairs(v) do
		parts[#parts + 1] = json.encode(tostring(k)) .. ":" .. tojson(x)
	end
	return "{" .. table.concat(parts, ",") .. "}"
end

-- Answers ------------------------------------------------------------

local function html(status, body)
	return status, "text/html; charset=utf-8", body
end

local function js(status, value)
	return status, "application/json", tojson(value)
end

local function see_other(req, to)
	return 303, "text/plain", "", req.base .. to
end

local LAYOUT = [[<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}} - walua console</title>
<link rel="stylesheet" href="{{base}}/style.css">
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header>
<nav aria-label="Console">
<span class="brand">walua</span>
<a href="{{base}}/">Overview</a>
<a href="{{base}}/events">Events</a>
<a href="{{base}}/events?state=dead">Dead letters</a>
<form class="inline" method="post" action="{{base}}/logout">
<input type="hidden" name="csrf" value="{{csrf}}">
<button type="submit">Log out {{user}}</button>
</form>
</nav>
</header>
<main id="main">
<h1>{{title}}</h1>
{{{flash}}}
{{{content}}}
</main>
</body>
</html>
]]

local FLASH = {
	replayed = { "ok", "The event is pending again: a running walua " ..
	    "takes it within a second." },
	dead = { "ok", "Dead letters replayed: they are pending again." },
	pending = { "err", "This event is already pending." },
	missing = { "err", "No such event." },
}

local function page(req, title, content, status)
	local f = FLASH[req.query.done or ""]
	local flash = ""
	if f then
		local text = f[2]
		if req.query.done == "dead" and req.query.n then
			text = "Dead letters replayed: " ..
			    tostring(math.tointeger(tonumber(req.query.n)) or 0) ..
			    " are pending again."
		end
		flash = render('<p class="msg {{k}}" role="status">{{t}}</p>',
		    { k = f[1], t = text })
	end
	return html(status or 200, render(LAYOUT, { title = title,
	    base = req.base, csrf = req.csrf, user = req.user, flash = flash,
	    content = content }))
end

-- Login --------------------------------------------------------------

local LOGIN = [[<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in - walua console</title>
<link rel="stylesheet" href="{{base}}/style.css">
</head>
<body>
<header><nav aria-label="Console"><span class="brand">walua</span></nav></header>
<main id="main" class="login">
<h1>Log in to the console</h1>
{{{message}}}
<form method="post" action="{{base}}/login">
<label for="user">User name</label>
<input id="user" name="user" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button>
</form>
</main>
</body>
</html>
]]

local function login_page(req)
	local msg = ""
	if req.message then
		msg = render('<p class="msg err" role="alert">{{m}}</p>',
		    { m = req.message })
	end
	return html(200, render(LOGIN, { base = req.base, message = msg }))
end

-- Overview -----------------------------------------------------------

local function overview_data()
	local s = C.stats()
	local r = C.runtime()
	return {
		pending = s.pending, retrying = s.retrying, dead = s.dead,
		done = s.done, inflight = r.inflight,
		oldest_pending_ms = s.oldest_pending_ms,
		oldest_pending_age_s = s.oldest_pending_ms and
		    math.max(0, (now_ms() - s.oldest_pending_ms) // 1000) or nil,
		last_acked_ms = s.last_acked_ms,
		workers = r.workers, generation = r.generation,
		unmarked = r.unmarked, database = r.database,
		reload = r.reload,
		minutes = { first_minute = r.first_minute,
		    acked = list(r.acked), handled = list(r.handled) },
	}
end

-- The last hour, a bar pair per minute, as inline SVG (no script).
local function chart(m)
	local W, H, top = 600, 140, 0
	for i = 1, 60 do
		top = math.max(top, m.acked[i] or 0, m.handled[i] or 0)
	end
	local scale = top > 0 and (H - 20) / top or 0
	local bars = {}
	for i = 1, 60 do
		local x = 30 + (i - 1) * 9.5
		local a, h = m.acked[i] or 0, m.handled[i] or 0
		if a + h > 0 then bars[#bars + 1] = string.format('<rect class="acked" x="%.1f" ' ..
		    'y="%.1f" width="4" height="%.1f"><title>%s: %d acked</title>' ..
		    '</rect><rect class="handled" x="%.1f" y="%.1f" width="4" ' ..
		    'height="%.1f"><title>%s: %d handled</title></rect>',
		    x, H - a * scale, a * scale, os.date("!%H:%M",
		    (m.first_minute + i - 1) * 60), a, x + 4.5, H - h * scale,
		    h * scale, os.date("!%H:%M", (m.first_minute + i - 1) * 60), h)
		end
	end
	local total_a, total_h = 0, 0
	for i = 1, 60 do
		total_a = total_a + (m.acked[i] or 0)
		total_h = total_h + (m.handled[i] or 0)
	end
	return string.format([[<figure>
<svg class="chart" viewBox="0 0 %d %d" role="img" aria-labelledby="chart-t">
<title id="chart-t">Events acknowledged and handled per minute, the last hour: %d acknowledged, %d handled</title>
<line class="axis" x1="28" y1="%d" x2="%d" y2="%d"/>
<text x="0" y="12">%d</text><text x="0" y="%d">0</text>
<text x="30" y="%d">%s</text><text x="%d" y="%d">%s UTC</text>
%s
</svg>
<figcaption class="legend"><span class="acked"></span>acknowledged
<span class="handled"></span>handled, per minute (UTC), since walua started or the last hour</figcaption>
</figure>]], W, H + 16, total_a, total_h, H, W, H, top, H, H + 14,
	    os.date("!%H:%M", m.first_minute * 60), W - 70, H + 14,
	    os.date("!%H:%M", (m.first_minute + 59) * 60), table.concat(bars))
end

local OVERVIEW = [[
<h2>Inbox</h2>
<ul class="cards">
<li><span class="n" id="n-pending">{{pending}}</span>pending</li>
<li><span class="n" id="n-retrying">{{retrying}}</span>retrying</li>
<li><span class="n" id="n-inflight">{{inflight}}</span>in flight</li>
<li class="dead"><span class="n" id="n-dead">{{dead}}</span><a href="{{base}}/events?state=dead">dead letters</a></li>
<li><span class="n" id="n-done">{{done}}</span>done</li>
<li><span class="n" id="n-oldest">{{oldest}}</span>oldest pending</li>
</ul>
{{{replay_dead}}}
<h2>The last hour</h2>
{{{chart}}}
<h2>Handlers and database</h2>
<dl class="fields">
<dt>Workers</dt><dd id="workers">{{workers}}</dd>
<dt>Generation</dt><dd id="generation">{{generation}}</dd>
<dt>Last reload</dt><dd id="reload">{{reload}}</dd>
<dt>Reload error</dt><dd id="reload-error">{{reload_error}}</dd>
<dt>Database</dt><dd id="database">{{database}} ({{dbpath}})</dd>
<dt>Last event acknowledged</dt><dd>{{last_acked}}</dd>
</dl>
]]

local function overview(req)
	local d = overview_data()
	local reload, reload_error = "none since walua started", "none"
	if d.reload then
		reload = (d.reload.ok and "ok" or "failed") .. " at " ..
		    iso(d.reload.ms)
		reload_error = d.reload.error or "none"
	end
	local replay = ""
	if d.dead > 0 then
		replay = render('<p><a href="{{base}}/dead/replay">Replay all ' ..
		    '{{n}} dead letters...</a></p>', { base = req.base, n = d.dead })
	end
	return page(req, "Overview", render(OVERVIEW, {
		base = req.base, pending = d.pending, retrying = d.retrying,
		inflight = d.inflight, dead = d.dead, done = d.done,
		oldest = d.oldest_pending_ms and age(d.oldest_pending_ms) or "none",
		replay_dead = replay, chart = chart(d.minutes),
		workers = d.workers, generation = d.generation, reload = reload,
		reload_error = reload_error, database = d.database,
		-- a PostgreSQL URL's password is never shown
		dbpath = (req.database:gsub("^(%a+://[^:/@]*:)[^@]*@", "%1***@")),
		last_acked = iso(d.last_acked_ms),
	}))
end

-- Events -------------------------------------------------------------

local STATES = { "pending", "retrying", "done", "dead" }
local FILTERS = { "state", "provider", "kind", "conversation", "q" }

local function filters_of(q)
	local f = {}
	for _, k in ipairs(FILTERS) do
		if q[k] and q[k] ~= "" then f[k] = q[k] end
	end
	local ok = f.state == nil
	for _, s in ipairs(STATES) do ok = ok or f.state == s end
	if not ok then f.state = nil end
	f.before = math.tointeger(tonumber(q.before or ""))
	f.limit = math.tointeger(tonumber(q.limit or "")) or 50
	return f
end

local function options(list, selected, any)
	local out = { render('<option value="">{{a}}</option>', { a = any }) }
	for _, v in ipairs(list) do
		out[#out + 1] = render('<option value="{{v}}"{{{s}}}>{{v}}</option>',
		    { v = v, s = v == selected and " selected" or "" })
	end
	return table.concat(out)
end

local EVENTS = [[
<form class="filters" method="get" action="{{base}}/events" role="search">
<label for="f-state">State<select id="f-state" name="state">{{{states}}}</select></label>
<label for="f-provider">Provider<select id="f-provider" name="provider">{{{providers}}}</select></label>
<label for="f-kind">Kind<input id="f-kind" name="kind" value="{{kind}}" size="10"></label>
<label for="f-conv">Conversation<input id="f-conv" name="conversation" value="{{conversation}}" size="18"></label>
<label for="f-q">Message id contains<input id="f-q" name="q" value="{{q}}" size="16"></label>
<button type="submit">Filter</button>
</form>
<h2>{{count}} events, newest first</h2>
<div class="scroll">
<table>
<thead><tr><th scope="col">Event</th><th scope="col">State</th><th scope="col">Provider</th><th scope="col">Kind</th><th scope="col">Conversation</th><th scope="col">Message id</th><th scope="col">Attempts</th><th scope="col">Acknowledged</th><th scope="col">Last error</th></tr></thead>
<tbody>
{{{rows}}}
</tbody>
</table>
</div>
{{{pager}}}
]]

local ROW = '<tr><td><a href="{{base}}/events/{{id_url}}">{{id}}</a></td>' ..
    '<td class="state-{{state}}">{{shown}}</td><td>{{provider}}</td>' ..
    '<td>{{kind}}</td><td>{{conversation}}</td><td>{{message_id}}</td>' ..
    '<td>{{attempts}}</td><td>{{acked}}</td><td>{{error}}</td></tr>'

local function shown_state(r)
	if r.state == "pending" and r.due_ms then return "retrying" end
	return r.state
end

local function events(req)
	local f = filters_of(req.query)
	local rows = C.list(f)
	local out = {}
	for _, r in ipairs(rows) do
		local e = r.last_error or ""
		if #e > 120 then e = e:sub(1, 120) .. "..." end
		out[#out + 1] = render(ROW, { base = req.base,
		    id_url = urlencode(r.id), id = r.id, state = r.state,
		    shown = shown_state(r), provider = r.provider, kind = r.kind,
		    conversation = r.conversation, message_id = r.message_id,
		    attempts = r.attempts, acked = iso(r.acked_ms), error = e })
	end
	if #out == 0 then
		out[1] = '<tr><td colspan="9">No events match.</td></tr>'
	end
	local pager = ""
	if #rows >= f.limit then
		local q = {}
		for _, k in ipairs(FILTERS) do q[k] = f[k] end
		q.before = rows[#rows].seq
		pager = render('<p class="pager"><a href="{{base}}/events{{qs}}" ' ..
		    'rel="next">Older events</a></p>', { base = req.base,
		    qs = query_string(q, { "state", "provider", "kind",
		    "conversation", "q", "before" }) })
	end
	return page(req, "Events", render(EVENTS, { base = req.base,
	    states = options(STATES, f.state, "any"),
	    providers = options({ "insider", "kapso", "meta" }, f.provider, "any"),
	    kind = f.kind, conversation = f.conversation, q = f.q,
	    count = #rows == f.limit and (#rows .. "+") or #rows,
	    rows = table.concat(out), pager = pager }))
end

local EVENT = [[
<dl class="fields">
<dt>Id</dt><dd id="ev-id">{{id}}</dd>
<dt>State</dt><dd id="ev-state" class="state-{{state}}">{{shown}}</dd>
<dt>Provider</dt><dd>{{provider}}</dd>
<dt>Endpoint</dt><dd>{{endpoint}}</dd>
<dt>Kind</dt><dd>{{kind}}</dd>
<dt>Conversation</dt><dd>{{conversation}}</dd>
<dt>Message id</dt><dd>{{message_id}}</dd>
<dt>Status</dt><dd>{{status}}</dd>
<dt>Attempts</dt><dd>{{attempts}}</dd>
<dt>Acknowledged</dt><dd>{{acked}}</dd>
<dt>Finished</dt><dd>{{finished}}</dd>
<dt>Next retry</dt><dd>{{due}}</dd>
<dt>Last error</dt><dd class="errtext">{{last_error}}</dd>
</dl>
{{{replay}}}
<h2>Attempts</h2>
<div class="scroll"><table>
<thead><tr><th scope="col">Attempt</th><th scope="col">When</th><th scope="col">Outcome</th></tr></thead>
<tbody>{{{attempts_rows}}}</tbody>
</table></div>
<h2>Sends</h2>
<div class="scroll"><table>
<thead><tr><th scope="col">#</th><th scope="col">Provider</th><th scope="col">To</th><th scope="col">Message id</th><th scope="col">Error</th><th scope="col">Made</th><th scope="col">Answered</th></tr></thead>
<tbody>{{{sends_rows}}}</tbody>
</table></div>
<h2>Body</h2>
<pre id="ev-body">{{body}}</pre>
]]

local function event_page(req, id)
	local ev = C.show(id)
	if not ev then
		return page(req, "No such event", render('<p>No event ' ..
		    '<code>{{id}}</code>. <a href="{{base}}/events">All events' ..
		    '</a></p>', { id = id, base = req.base }), 404)
	end
	local att = {}
	for _, a in ipairs(ev.failed_attempts) do
		att[#att + 1] = render('<tr><td>{{n}}</td><td>{{t}}</td>' ..
		    '<td class="errtext">failed: {{e}}</td></tr>', { n = a.attempt, t = iso(a.ms),
		    e = a.error })
	end
	if ev.state == "done" then
		att[#att + 1] = render('<tr><td>{{n}}</td><td>{{t}}</td>' ..
		    '<td class="state-done">handled</td></tr>',
		    { n = ev.attempts, t = iso(ev.done_ms) })
	end
	if #att == 0 then
		att[1] = '<tr><td colspan="3">No attempt has finished yet.</td></tr>'
	end
	local sends = {}
	for _, sd in ipairs(ev.sends) do
		sends[#sends + 1] = render('<tr><td>{{seq}}</td><td>{{p}}</td>' ..
		    '<td>{{to}}</td><td>{{mid}}</td><td>{{err}}</td><td>{{c}}</td>' ..
		    '<td>{{a}}</td></tr>', { seq = sd.seq, p = sd.provider,
		    to = sd.recipient, mid = sd.message_id, err = sd.error,
		    c = iso(sd.created_ms), a = iso(sd.answered_ms) })
	end
	if #sends == 0 then
		sends[1] = '<tr><td colspan="7">No sends.</td></tr>'
	end
	local replay = ""
	if ev.state ~= "pending" then
		replay = render('<form method="post" action="{{base}}/events/' ..
		    '{{id_url}}/replay"><input type="hidden" name="csrf" ' ..
		    'value="{{csrf}}"><button type="submit">Replay this event' ..
		    '</button></form>', { base = req.base, id_url = urlencode(id),
		    csrf = req.csrf })
	end
	return page(req, "Event " .. id, render(EVENT, {
		id = ev.id, state = ev.state, shown = shown_state(ev),
		provider = ev.provider, endpoint = ev.endpoint, kind = ev.kind,
		conversation = ev.conversation, message_id = ev.message_id,
		status = ev.status, attempts = ev.attempts, acked = iso(ev.acked_ms),
		finished = ev.state ~= "pending" and iso(ev.done_ms) or "",
		due = ev.state == "pending" and iso(ev.due_ms) or "",
		last_error = ev.last_error, replay = replay,
		attempts_rows = table.concat(att), sends_rows = table.concat(sends),
		body = pretty_text(ev.body or ""),
	}))
end

-- Actions ------------------------------------------------------------

-- Replay one event: true, or nil and "pending" / "missing" / a message.
local function replay_one(req, id)
	local ok, err = C.inbox.replay(req.database, id)
	if ok then
		C.log(1, "console: event replayed", "user", req.user, "event", id)
		return true
	end
	local m = tostring(err)
	C.log(2, "console: replay refused", "user", req.user, "event", id,
	    "error", m)
	if m:find("already pending", 1, true) then return nil, "pending" end
	if m:find("no event", 1, true) then return nil, "missing" end
	return nil, m
end

local function replay_dead(req)
	local n, err = C.inbox.replay_dead(req.database)
	if not n then
		C.log(3, "console: replay of dead letters failed", "user",
		    req.user, "error", tostring(err))
		return nil, tostring(err)
	end
	C.log(1, "console: dead letters replayed", "user", req.user,
	    "#count", n)
	return n
end

local CONFIRM = [[
<p>{{n}} dead letters will become pending again, and their handlers will run
them from attempt 1. Replies they already sent are not sent again.</p>
<form method="post" action="{{base}}/dead/replay">
<input type="hidden" name="csrf" value="{{csrf}}">
<input type="hidden" name="confirm" value="yes">
<button class="danger" type="submit">Replay {{n}} dead letters</button>
<a href="{{base}}/">Cancel</a>
</form>
]]

local function confirm_dead(req)
	local s = C.stats()
	return page(req, "Replay all dead letters?", render(CONFIRM,
	    { n = s.dead, base = req.base, csrf = req.csrf }))
end

-- JSON API -----------------------------------------------------------

local function api(req, path)
	local id = path:match("^/api/events/([^/]+)$")
	local rid = path:match("^/api/events/([^/]+)/replay$")
	if req.method == "GET" or req.method == "HEAD" then
		if path == "/api/overview" then
			-- the session's CSRF token, for a script's POSTs: only a
			-- page of this origin can read this answer (no CORS)
			local d = overview_data()
			d.csrf = req.csrf
			return js(200, d)
		elseif path == "/api/events" then
			local f = filters_of(req.query)
			local rows = C.list(f)
			for _, r in ipairs(rows) do r.shown_state = shown_state(r) end
			return js(200, { events = list(rows),
			    next_before = #rows >= f.limit and rows[#rows].seq or nil })
		elseif id then
			local ev = C.show(id)
			if not ev then
				return js(404, { ok = false, error = "no such event" })
			end
			local ok, body = pcall(json.decode, ev.body or "")
			if ok then ev.body = body end
			list(ev.sends)
			list(ev.failed_attempts)
			return js(200, ev)
		end
	elseif req.method == "POST" then
		if rid then
			local ok, why = replay_one(req, rid)
			if ok then return js(200, { ok = true, replayed = 1, id = rid }) end
			return js(why == "missing" and 404 or 409, { ok = false,
			    error = why == "missing" and "no such event" or
			    why == "pending" and "already pending" or why })
		elseif path == "/api/dead/replay" then
			local n, err = replay_dead(req)
			if not n then return js(503, { ok = false, error = err }) end
			return js(200, { ok = true, replayed = n })
		end
	end
	return js(404, { ok = false, error = "no such API path or method" })
end

-- The entry point ----------------------------------------------------

function M.handle(req)
	local path = req.path
	if path:sub(1, 5) == "/api/" then return api(req, path) end
	if path == "/login" then return login_page(req) end
	local form = parse_form(req.form)
	if req.method == "POST" then
		local rid = path:match("^/events/([^/]+)/replay$")
		if rid then
			local ok, why = replay_one(req, rid)
			return see_other(req, "/events/" .. urlencode(rid) ..
			    "?done=" .. (ok and "replayed" or (why == "missing" and
			    "missing" or "pending")))
		elseif path == "/dead/replay" then
			if form.confirm ~= "yes" then return confirm_dead(req) end
			local n, err = replay_dead(req)
			if not n then
				return page(req, "Replay failed", render(
				    '<p class="msg err">{{e}}</p>', { e = err }), 503)
			end
			return see_other(req, "/?done=dead&n=" .. n)
		end
		return html(404, "no such page\n")
	end
	if path == "/" then return overview(req) end
	if path == "/events" then return events(req) end
	if path == "/dead/replay" then return confirm_dead(req) end
	local id = path:match("^/events/([^/]+)$")
	if id then return event_page(req, id) end
	return page(req, "Not found", render('<p>No such page. <a href=' ..
	    '"{{base}}/">Overview</a></p>', { base = req.base }), 404)
end

return M.handle
