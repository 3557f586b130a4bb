-- simulate - send walua a correctly authenticated webhook, as the provider
-- would, and print the answer.
--
--   walua run simulate --url http://127.0.0.1:8080/webhooks/insider \
--       --provider insider --type text --text "menu"
--
-- Credentials come from flags (--token, --client-id/--client-secret,
-- --secret, --app-secret) or from walua's config, for the endpoint at
-- --url's path.  For an oauth2 endpoint it first fetches an access token
-- from the daemon's token endpoint (oauth2.path on the same host).  The body
-- is built once and sent as is, so a signature covers the exact bytes
-- (walua.simulate, which `walua run setup apply --verify` uses too).

local json = require "walua.json"
local simulate = require "walua.simulate"

local TYPES = simulate.TYPES

local USAGE = [[
usage: walua run simulate --url URL [--provider insider|kapso|meta]
           [--type TYPE] [options]
  --type T          ]] .. table.concat(TYPES, ", ") .. [[

                    (default text; status = sent)
  --text S          the message text (default "hello")
  --from N          the user's number (default 15551234567)
  --phone-number-id N   the business number's id (default 106540352242922)
  --message-id ID   (default: a new random wamid)
  --token T         bearer token of a bearer endpoint
  --client-id ID --client-secret S   an oauth2 endpoint's client
  --secret S        a kapso endpoint's secret
  --app-secret S    a meta endpoint's app secret
  --json            print the answer as JSON
Without credential flags, they come from walua's config (-c FILE) for the
endpoint whose path is --url's path.  Exit status 0 on a 200.]]

local function die(msg, code)
	io.stderr:write("walua run simulate: ", msg, "\n")
	os.exit(code or 1)
end

local opts = { type = "text", text = "hello", from = "15551234567",
    ["phone-number-id"] = "106540352242922" }
local flags = { json = true, help = true }
local args = { ... }
local i = 1
while i <= #args do
	local a = args[i]
	local name = a:match("^%-%-(.+)$")
	if a == "-h" or name == "help" then
		print(USAGE)
		os.exit(0)
	elseif not name then
		die("unexpected argument '" .. a .. "'\n" .. USAGE, 2)
	elseif flags[name] then
		opts[name] = true
	else
		i = i + 1
		if args[i] == nil then die("--" .. name .. " needs a value", 2) end
		opts[name] = args[i]
	end
	i = i + 1
end
if not opts.url then die("--url is required\n" .. USAGE, 2) end

local r, err, code = simulate.deliver{ url = opts.url,
    provider = opts.provider, type = opts.type, text = opts.text,
    from = opts.from, phone_number_id = opts["phone-number-id"],
    message_id = opts["message-id"], token = opts.token,
    client_id = opts["client-id"], client_secret = opts["client-secret"],
    secret = opts.secret, app_secret = opts["app-secret"] }
if not r then
	die(err .. (code == 2 and "\n" .. USAGE or ""), code)
end
if opts.json then
	print(json.encode({ status = r.status, answer = r.json or r.body,
	    provider = r.provider, type = r.type, event = r.event,
	    message_id = r.message_id, auth = r.auth }))
else
	print(string.format("%s %s (%s, %s) -> %d %s", "POST", opts.url,
	    r.provider, r.type, r.status, r.body))
	print("auth: " .. r.auth)
	print("message id: " .. r.message_id)
end
os.exit(r.status == 200 and 0 or 1)
