-- test_envelope.lua - run by test_envelope.c (see there for what it
-- gives): the C reader and normalize.lua, on the fixtures and on mutants
-- of them, give the same events.
local cjson = require "cjson"

local function read(path)
	local f = assert(io.open(path, "rb"))
	local s = f:read("a")
	f:close()
	return s
end

-- Deep equality, integers and floats told apart.
local function same(a, b, where)
	if type(a) ~= type(b) then
		return false, where .. ": " .. type(a) .. " against " .. type(b)
	end
	if type(a) == "number" and math.type(a) ~= math.type(b) then
		return false, where .. ": " .. math.type(a) .. " against " ..
		    math.type(b)
	end
	if type(a) ~= "table" then
		if a == b then return true end
		return false, where .. ": " .. tostring(a) .. " against " ..
		    tostring(b)
	end
	for k, v in pairs(a) do
		local ok, why = same(v, b[k], where .. "." .. tostring(k))
		if not ok then return false, why end
	end
	for k in pairs(b) do
		if a[k] == nil then
			return false, where .. "." .. tostring(k) ..
			    ": only from normalize.lua"
		end
	end
	return true
end

-- Both ways; true, or false and the first difference.
local function agree(provider, body)
	local a, ra, ea = decode(provider, body, true)
	local b, rb, eb = decode(provider, body, false)
	if not a or not b then
		-- -2: walua failed (a 503 the provider retries forever)
		if not a and not b and ra == rb and ea == eb and ra ~= -2 then
			return true
		end
		return false, "C: " .. tostring(ra) .. " " .. tostring(ea) ..
		    ", normalize.lua: " .. tostring(rb) .. " " .. tostring(eb)
	end
	return same(a, b, "events")
end

local providers = { "insider", "meta" }

-- Every value of t, by its path of keys.
local function paths(t, prefix, out)
	for k, v in pairs(t) do
		local p = table.move(prefix, 1, #prefix, 1, {})
		p[#p + 1] = k
		out[#out + 1] = p
		if type(v) == "table" then paths(v, p, out) end
	end
	return out
end

local REMOVE = {}
local replacements = { REMOVE, cjson.null, 7, 2.5, "", "12a", "x", "a\0b",
    true, {}, { "x" }, { 5 }, { x = "y" } }

-- The body with the value at path replaced (or removed); nil when cjson
-- cannot encode the result (a sparse array).
local function mutant(text, path, with)
	local t = cjson.decode(text)
	local parent = t
	for i = 1, #path - 1 do parent = parent[path[i]] end
	local k = path[#path]
	if with == REMOVE then
		if math.type(k) == "integer" then
			table.remove(parent, k)
		else
			parent[k] = nil
		end
	else
		parent[k] = with
	end
	local ok, body = pcall(cjson.encode, t)
	return ok and body or nil
end

local in_c = {}
local mutants, mutants_in_c = 0, 0
for _, path in ipairs(FIXTURES) do
	local text = read(path)
	local name = path:gsub("^tests/fixtures/", "")
	for _, provider in ipairs(providers) do
		local ok, why = agree(provider, text)
		check(ok, name .. " (" .. provider .. "): " .. tostring(why))
		if read_in_c(provider, text) then in_c[name] = true end
	end
	-- every value removed or of another type: the same events
	local decoded = cjson.decode(text)
	local bad
	for _, p in ipairs(paths(decoded, {}, {})) do
		for _, with in ipairs(replacements) do
			local body = mutant(text, p, with)
			if body then
				mutants = mutants + 1
				if read_in_c("meta", body) then
					mutants_in_c = mutants_in_c + 1
				end
				local ok, why = agree("meta", body)
				if not ok and not bad then
					local keys = {}
					for i, k in ipairs(p) do keys[i] = tostring(k) end
					bad = table.concat(keys, ".") .. " = " ..
					    tostring(with == REMOVE and "(removed)" or
					    cjson.encode(with)) .. ": " .. why
				end
			end
		end
	end
	check(bad == nil, name .. ", a value changed: " .. tostring(bad))
end

-- The usual shapes are read in C (a reader that declined all would
-- agree with normalize.lua everywhere).
for _, name in ipairs({ "meta/text.json", "meta/button.json",
    "meta/interactive_button_reply.json", "meta/interactive_list_reply.json",
    "meta/interactive_nfm_reply.json", "meta/status_sent.json",
    "meta/status_delivered.json", "meta/status_read.json",
    "meta/status_played.json", "insider/f_reply_text.json",
    "insider/f_reply_text_empty_key.json", "insider/f_reply_text_no_key.json",
    "insider/f_reply_text_nonascii_escaped.json", "insider/h_button.json",
    "insider/d_status_delivered.json", "insider/d_status_sent.json",
    "insider/d_status_display_phone_number_id.json", "meta/image.json",
    "meta/audio.json", "meta/video.json", "meta/document.json",
    "meta/sticker.json", "meta/location.json", "meta/reaction.json",
    "meta/multi.json", "insider/g_media_image.json",
    "insider/g_media_document.json" }) do
	check(in_c[name], name .. " is read in C")
end
-- and the others are not: errors, other types, other fields, other bodies
for _, name in ipairs({ "meta/status_failed.json", "meta/contacts.json",
    "meta/order.json", "meta/system.json", "meta/other_field.json",
    "meta/value_errors.json", "meta/unknown.json", "insider/a_accepted.json",
    "kapso/message_received_text.json" }) do
	check(not in_c[name], name .. " is left to normalize.lua")
end
print(string.format("%d mutants, %d of them read in C", mutants,
    mutants_in_c))
check(mutants_in_c > 100, "mutants read in C")
