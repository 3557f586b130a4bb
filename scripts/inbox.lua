-- inbox - look into walua's durable inbox, and replay events.
--
--   walua run inbox stats              counts: pending, retrying, dead, done
--   walua run inbox list [--state S] [--limit N]   newest first
--   walua run inbox show ID            one event, with its body
--   walua run inbox dead [--limit N]   dead letters, with their last error
--   walua run inbox replay ID          make a done or dead event pending again
--   walua run inbox replay --dead      make every dead event pending again
--
-- Options: --db PATH (default: the config's database), --json, --help.
-- A running walua picks replayed events up within a second.

local inbox = require "walua.inbox"
local json = require "walua.json"
local settings = require "walua.settings"

local USAGE = [[
usage: walua run inbox [--db PATH] [--json] COMMAND
  stats                      counts of pending, retrying, dead and done events
  list [--state S] [--limit N]
                             recent events, newest first (S: pending, done,
                             dead, all; N defaults to 50)
  show ID                    one event with its body
  dead [--limit N]           dead letters with their last error
  replay ID                  make a done or dead event pending again
  replay --dead              make every dead event pending again
The database is the config's (-c FILE, else ./walua.conf.lua) unless --db.]]

local function fail(msg)
	io.stderr:write("walua run inbox: ", tostring(msg), "\n")
	os.exit(1)
end

-- Parse the arguments: options anywhere, the rest positional.
local opts, pos = { limit = 50, state = "all" }, {}
local args = { ... }
local i = 1
while i <= #args do
	local a = args[i]
	if a == "--help" or a == "-h" then
		print(USAGE)
		os.exit(0)
	elseif a == "--json" then
		opts.json = true
	elseif a == "--dead" then
		opts.dead = true
	elseif a == "--db" or a == "--limit" or a == "--state" then
		i = i + 1
		if args[i] == nil then fail(a .. " needs a value") end
		opts[a:sub(3)] = args[i]
	elseif a:sub(1, 2) == "--" then
		fail("unknown option '" .. a .. "'\n" .. USAGE)
	else
		pos[#pos + 1] = a
	end
	i = i + 1
end
local db = opts.db or settings.database
local limit = tonumber(opts.limit) or fail("--limit needs a number")

local function iso(ms)
	if not ms then return "" end
	return os.date("!%Y-%m-%dT%H:%M:%SZ", ms // 1000)
end

local function output(value, text)
	if opts.json then
		print(json.encode(value))
	else
		print(text)
	end
end

-- A readable table of rows with the given columns.
local function tabulate(rows, cols)
	local width, lines = {}, {}
	for c, name in ipairs(cols) do width[c] = #name end
	local cells = {}
	for r, row in ipairs(rows) do
		cells[r] = {}
		for c, name in ipairs(cols) do
			local v = row[name]
			if name:sub(-3) == "_ms" then v = iso(v) end
			v = tostring(v == nil and "" or v):gsub("\n.*", " …")
			if #v > 60 then v = v:sub(1, 57) .. "..." end
			cells[r][c] = v
			if #v > width[c] then width[c] = #v end
		end
	end
	local function line(values)
		local out = {}
		for c, v in ipairs(values) do
			out[c] = v .. string.rep(" ", width[c] - #v)
		end
		return (table.concat(out, "  "):gsub("%s+$", ""))
	end
	lines[1] = line(cols)
	for r = 1, #cells do lines[#lines + 1] = line(cells[r]) end
	if #rows == 0 then lines[#lines + 1] = "(none)" end
	return table.concat(lines, "\n")
end

local cmd = pos[1]
if cmd == "stats" then
	local s, err = inbox.stats(db)
	if not s then fail(err) end
	output(s, string.format("database  %s\npending   %d (retrying %d)\n" ..
	    "dead      %d\ndone      %d\noldest pending acked at %s\n" ..
	    "last acked at %s\ndedup keys %d", db, s.pending, s.retrying,
	    s.dead, s.done, iso(s.oldest_pending_ms) ~= "" and
	    iso(s.oldest_pending_ms) or "-", iso(s.last_acked_ms) ~= "" and
	    iso(s.last_acked_ms) or "-", s.dedup_keys))
elseif cmd == "list" or cmd == "dead" then
	local state = cmd == "dead" and "dead" or opts.state
	local states = { pending = true, done = true, dead = true, all = true }
	if not states[state] then
		fail("--state must be pending, done, dead or all")
	end
	local rows, err = inbox.list(db, state, limit)
	if not rows then fail(err) end
	local cols = { "id", "state", "kind", "conversation", "attempts",
	    "acked_ms" }
	if cmd == "dead" then cols[#cols + 1] = "last_error" end
	output(json.array(rows), tabulate(rows, cols))
elseif cmd == "show" then
	if not pos[2] then fail("show needs an event id") end
	local row, err = inbox.show(db, pos[2])
	if not row then fail(err) end
	if opts.json then
		row.body = json.decode(row.body) or row.body
		print(json.encode(row))
	else
		local keys = {}
		for k in pairs(row) do
			if k ~= "body" then keys[#keys + 1] = k end
		end
		table.sort(keys)
		for _, k in ipairs(keys) do
			local v = row[k]
			if k:sub(-3) == "_ms" then v = iso(v) end
			print(string.format("%-13s %s", k, tostring(v)))
		end
		print("body          " .. row.body)
	end
elseif cmd == "replay" then
	if opts.dead then
		local n, err = inbox.replay_dead(db)
		if not n then fail(err) end
		output({ replayed = n }, string.format("%d dead events are " ..
		    "pending again", n))
	else
		if not pos[2] then fail("replay needs an event id, or --dead") end
		local ok, err = inbox.replay(db, pos[2])
		if not ok then fail(err) end
		output({ replayed = 1, id = pos[2] }, "event " .. pos[2] ..
		    " is pending again")
	end
else
	fail((cmd and ("unknown command '" .. cmd .. "'\n") or "") .. USAGE)
end
