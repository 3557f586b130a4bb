-- walua/cli.lua - what the admin scripts share: arguments, tables, masks.
--
--   local cli = require "walua.cli"
--   local opts, pos = cli.parse({ ... }, { json = true, all = true })
--   cli.die(msg)                      message on stderr, exit 1
--   cli.mask(secret)                  "partner-******" style
--   cli.table(rows, columns)          a readable table (text)
--   cli.output(opts, value, text)     JSON with --json, else the text
--
-- parse: "--name value" options (names in `flags` take no value), "-h" and
-- "--help" set opts.help; the rest are positional.

local json = require "walua.json"

local cli = {}

function cli.die(msg, code)
	io.stderr:write(tostring(msg), "\n")
	os.exit(code or 1)
end

function cli.parse(args, flags)
	local opts, pos = {}, {}
	local i = 1
	while i <= #args do
		local a = args[i]
		local name = a:match("^%-%-([%w%-_]+)$")
		if a == "-h" or name == "help" then
			opts.help = true
		elseif name and flags[name] then
			opts[name] = true
		elseif name then
			i = i + 1
			if args[i] == nil then
				cli.die("--" .. name .. " needs a value", 2)
			end
			opts[name] = args[i]
		else
			pos[#pos + 1] = a
		end
		i = i + 1
	end
	return opts, pos
end

-- Show only the start of a secret (never enough to use it).
function cli.mask(s)
	if type(s) ~= "string" or s == "" then return s end
	if s:find("%*%*%*%*") then return s end	-- already masked
	local keep = math.min(4, #s // 4)
	return s:sub(1, keep) .. string.rep("*", 8)
end

-- Mask every field whose name says it is a secret, at any depth.
local SECRET = { secret = true, client_secret = true, api_key = true,
    secret_key = true, refresh_token = true, token = true,
    access_token = true, auth_key = true, password_hash = true }

function cli.masked(v)
	if type(v) ~= "table" then return v end
	local out = {}
	for k, x in pairs(v) do
		if SECRET[k] and type(x) == "string" then
			out[k] = cli.mask(x)
		else
			out[k] = cli.masked(x)
		end
	end
	if getmetatable(v) == "walua.json.array" then json.array(out) end
	return out
end

local function cell(v)
	if v == nil or v == json.null then return "" end
	if type(v) == "table" then
		local parts = {}
		for i, x in ipairs(v) do parts[i] = tostring(x) end
		if #parts > 0 then return table.concat(parts, ",") end
		return json.encode(v)
	end
	return (tostring(v):gsub("\n.*", " ..."))
end

function cli.table(rows, columns)
	local width, cells = {}, {}
	for c, name in ipairs(columns) do width[c] = #name end
	for r, row in ipairs(rows) do
		cells[r] = {}
		for c, name in ipairs(columns) do
			local v = cell(row[name])
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
	local lines = { line(columns) }
	for r = 1, #cells do lines[#lines + 1] = line(cells[r]) end
	if #rows == 0 then lines[#lines + 1] = "(none)" end
	return table.concat(lines, "\n")
end

function cli.output(opts, value, text)
	if opts.json then
		print(json.encode(value))
	else
		print(text)
	end
end

-- The start every admin script shares: parse the arguments, answer
-- --help, and give the two ways to stop (a usage error exits 2 with the
-- usage; a failure exits 1 with the message, e.g. the provider's).
function cli.start(name, usage, args, flags)
	local opts, pos = cli.parse(args, flags)
	if opts.help then
		print(usage)
		os.exit(0)
	end
	local prefix = "walua run " .. name .. ": "
	local function usage_error(msg)
		cli.die(prefix .. msg .. "\n" .. usage, 2)
	end
	local function fail(err)
		cli.die(prefix .. tostring(err))
	end
	return opts, pos, usage_error, fail
end

-- A comma-separated list option as a list.
function cli.list(s)
	local out = {}
	if s == nil or s == "" then return json.array(out) end
	for item in s:gmatch("[^,%s]+") do out[#out + 1] = item end
	return json.array(out)
end

return cli
