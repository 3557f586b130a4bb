-- inbox - look into walua's durable inbox, and replay events.
--
--   walua run inbox stats              counts: pending, retrying, dead, done
--   walua run inbox list [--state S] [--limit N]   newest first
--   walua run inbox show ID            one event, with its body and sends
--   walua run inbox dead [--limit N]   dead letters, with their last error
--   walua run inbox replay ID [--resend]  make a done or dead event pending
--                                      again (--resend: its replies too)
--   walua run inbox replay --dead      make every dead event pending again
--   walua run inbox backup PATH        a consistent copy of the database,
--                                      taken while walua runs
--
-- Options: --db PATH (default: the config's database), --json, --help.
-- A running walua picks replayed events up within a second.

local cli = require "walua.cli"
local inbox = require "walua.inbox"
local json = require "walua.json"
local settings = require "walua.settings"

local USAGE = [[
usage: walua run inbox [--db PATH] [--json] COMMAND
  stats                      counts of pending, retrying, dead and done events
  list [--state S] [--limit N]
                             recent events, newest first (S: pending, done,
                             dead, all; N defaults to 50)
  show ID                    one event with its body and the replies its
                             handler sent (walua.whatsapp)
  dead [--limit N]           dead letters with their last error
  replay ID [--resend]       make a done or dead event pending again; the
                             replies it sent are not sent again unless
                             --resend
  replay --dead              make every dead event pending again
  backup PATH                a consistent copy of the whole database (inbox,
                             store, tokens) while walua runs; PATH must not
                             exist
The database is the config's (-c FILE, else ./walua.conf.lua) unless --db.]]

local function fail(msg)
	io.stderr:write("walua run inbox: ", tostring(msg), "\n")
	os.exit(1)
end

local opts, pos = cli.parse({ ... }, { json = true, dead = true,
    resend = true })
if opts.help then
	print(USAGE)
	os.exit(0)
end
for k in pairs(opts) do
	if not ({ json = 1, dead = 1, db = 1, limit = 1, state = 1,
	    resend = 1 })[k] then
		fail("unknown option '--" .. k .. "'\n" .. USAGE)
	end
end
opts.state = opts.state or "all"
local db = opts.db or settings.database
local limit = tonumber(opts.limit or 50) or fail("--limit needs a number")

local function iso(ms)
	if not ms then return "" end
	return os.date("!%Y-%m-%dT%H:%M:%SZ", ms // 1000)
end

local function output(value, text)
	cli.output(opts, value, text)
end

-- A readable table of rows, times shown as ISO 8601.
local function tabulate(rows, cols)
	local shown = {}
	for r, row in ipairs(rows) do
		shown[r] = {}
		for k, v in pairs(row) do
			shown[r][k] = k:sub(-3) == "_ms" and iso(v) or v
		end
	end
	return cli.table(shown, cols)
end

local cmd = pos[1]
if cmd == "stats" then
	local s, err = inbox.stats(db)
	if not s then fail(err) end
	output(s, string.format("database  %s\npending   %d (retrying %d)\n" ..
	    "dead      %d\ndone      %d\noldest pending acked at %s\n" ..
	    "last acked at %s\ndedup keys %d",
	    -- a PostgreSQL URL's password is never printed
	    (db:gsub("^(%a+://[^:/@]*:)[^@]*@", "%1***@")), s.pending, s.retrying,
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
		for _, sd in ipairs(row.sends or {}) do
			print(string.format("send %-8d %s to %s via %s: %s", sd.seq,
			    sd.message_id and "sent" or sd.error and "failed" or
			    "no answer", tostring(sd.recipient), sd.provider,
			    sd.message_id or sd.error or ("since " ..
			    iso(sd.created_ms))))
		end
	end
elseif cmd == "replay" then
	if opts.dead then
		local n, err = inbox.replay_dead(db)
		if not n then fail(err) end
		output({ replayed = n }, string.format("%d dead events are " ..
		    "pending again", n))
	else
		if not pos[2] then fail("replay needs an event id, or --dead") end
		local ok, err = inbox.replay(db, pos[2], opts.resend)
		if not ok then fail(err) end
		output({ replayed = 1, id = pos[2] }, "event " .. pos[2] ..
		    " is pending again")
	end
elseif cmd == "backup" then
	if not pos[2] then fail("backup needs a path to write") end
	local n, err = inbox.backup(db, pos[2])
	if not n then fail(err) end
	output({ backup = pos[2], bytes = n }, string.format("%s copied to " ..
	    "%s (%d bytes)", db, pos[2], n))
else
	fail((cmd and ("unknown command '" .. cmd .. "'\n") or "") .. USAGE)
end
