-- console-passwd - print the hash of a console password, for the config's
-- console.users[i].password_hash.
--
--   walua run console-passwd [--iterations N] [PASSWORD]
--
-- The password is the first argument, else read from standard input (a
-- line; without echo, and asked twice, on a terminal).  Prefer standard
-- input: an argument may stay in the shell's history and be seen in ps.

local cli = require "walua.cli"
local passwd = require "walua.passwd"

local USAGE = [[
usage: walua run console-passwd [--iterations N] [PASSWORD]
Prints pbkdf2-sha256$<iterations>$<salt>$<hash> for console.users in
walua's config.  Without PASSWORD, reads it from standard input (no echo
on a terminal).  --iterations: PBKDF2 rounds (default 300000).]]

local opts, pos = cli.parse({ ... }, {})
if opts.help then
	print(USAGE)
	os.exit(0)
end
for k in pairs(opts) do
	if k ~= "iterations" then cli.die("unknown option '--" .. k .. "'\n" ..
	    USAGE, 2) end
end
local iterations = opts.iterations and (math.tointeger(tonumber(
    opts.iterations)) or cli.die("--iterations needs a whole number", 2))

-- Whether standard input is a terminal (then: no echo).
local function tty()
	return os.execute("test -t 0") == true
end

local function ask(prompt)
	io.stderr:write(prompt)
	io.stderr:flush()
	os.execute("stty -echo 2>/dev/null")
	local line = io.read("l")
	os.execute("stty echo 2>/dev/null")
	io.stderr:write("\n")
	return line
end

local pw = pos[1]
if pw == nil then
	if tty() then
		pw = ask("password: ")
		if pw ~= nil and ask("again: ") ~= pw then
			cli.die("the two passwords differ")
		end
	else
		pw = io.read("l")
	end
end
if pw == nil or pw == "" then cli.die("no password given") end
local h, err = passwd.hash(pw, iterations)
if not h then cli.die(tostring(err)) end
print(h)
