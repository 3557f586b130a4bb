-- post.lua - wrk script for the walua benchmark: POST a webhook payload with
-- a distinct message id on every request.
--
--   wrk -t1 -c32 -d10s --latency -s post.lua URL -- PAYLOAD TOKEN NONCE [close] [CONVERSATIONS]
--
-- PAYLOAD is a JSON file with placeholders: @ID@ (the message id; walua
-- dedups by it, so every request carries a new one), @WA@ (the customer's
-- number: one of CONVERSATIONS, default 1000, so walua's one-at-a-time per
-- conversation rule does not turn the handlers into one queue), @TEXT@
-- (cycles through a text for each of the bench handler's three rules).
-- NONCE (from the driver, new for each run) and a random per-thread prefix
-- keep ids distinct across threads, runs and rounds.  "close" adds
-- `Connection: close` (one request per connection).
--
-- done() prints one line starting with BENCHJSON: the run's numbers as JSON
-- (latencies in microseconds), which bench.py reads.

local thread_count = 0

function setup(thread)
	thread_count = thread_count + 1
	thread:set("thread_no", thread_count)
end

local parts, slots, head, idbase, conversations
local counter = 0
local TEXTS = { "menu", "order 4711", "Merhaba, kargom ne zaman gelir?" }

function init(args)
	local f = assert(io.open(args[1], "rb"))
	local template = f:read("*a"):gsub("%s+$", "")
	f:close()
	local token = args[2]
	local nonce = args[3] or "0"
	conversations = tonumber(args[5] or "") or 1000
	math.randomseed(os.time() + (thread_no or 1) * 7919 +
	    math.floor(os.clock() * 1e6))
	local rnd = string.format("%06x", math.random(0, 0xffffff))
	-- about as long as a real wamid (base64 of the number and a hash)
	idbase = "wamid.HBgMOTA1MzIxMjM0NTY3FQIAEhgg" .. nonce .. rnd ..
	    string.format("%02d", thread_no or 1)
	-- the template cut at its placeholders: parts[i] is literal text,
	-- slots[i] the name of the value that goes in that place
	parts, slots = {}, {}
	local pos = 1
	for a, name, b in template:gmatch("()@(%u+)@()") do
		parts[#parts + 1] = template:sub(pos, a - 1)
		slots[#parts] = name
		pos = b
	end
	parts[#parts + 1] = template:sub(pos)
	-- the request head, built once; Content-Length is added per request
	local host = wrk.host .. ":" .. wrk.port
	head = "POST " .. wrk.path .. " HTTP/1.1\r\n" ..
	    "Host: " .. host .. "\r\n" ..
	    "User-Agent: Insider-Webhook/1.0\r\n" ..
	    "Content-Type: application/json\r\n" ..
	    "Authorization: Bearer " .. token .. "\r\n" ..
	    (args[4] == "close" and "Connection: close\r\n" or "") ..
	    "Content-Length: "
end

local vals, buf = {}, {}

function request()
	counter = counter + 1
	vals.ID = idbase .. string.format("%010d", counter)
	vals.WA = tostring(905320000000 + counter % conversations)
	vals.TEXT = TEXTS[counter % 3 + 1]
	local n = #parts
	for i = 1, n - 1 do
		buf[2 * i - 1] = parts[i]
		buf[2 * i] = vals[slots[i]]
	end
	buf[2 * n - 1] = parts[n]
	local body = table.concat(buf, "", 1, 2 * n - 1)
	return head .. #body .. "\r\n\r\n" .. body
end

function done(summary, latency, requests)
	local e = summary.errors
	io.write(string.format(
	    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
	    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
	    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
	    '"mean_us":%.1f}\n',
	    summary.requests, summary.duration, summary.bytes,
	    e.connect, e.read, e.write, e.status, e.timeout,
	    latency:percentile(50), latency:percentile(90),
	    latency:percentile(99), latency.max, latency.mean))
end
