-- walua/json.lua - JSON for handlers and admin scripts, over lua-cjson.
--
-- encode(v) -> text (raises on values JSON cannot hold); decode(text) ->
-- value | nil, err (never raises on bad input; numbers without a fraction
-- come back as integers); null; array(t) marks a table as an array, so
-- that an empty one encodes as [] (lua-cjson 2.1 writes every empty table
-- as {}): marked empty tables are swapped for a sentinel string before
-- encoding, and the sentinel's JSON text is then replaced by [].

local cjson = require "cjson"

local json = { null = cjson.null }

-- The metatable is protected: getmetatable() gives its name, so no script
-- can change how the arrays of later events encode.
local ARRAY = { __name = "walua.json.array", __metatable = "walua.json.array" }
local SENTINEL = "\1walua:empty-array\1"
local QUOTED = '"\\u0001walua:empty%-array\\u0001"'
local used = false

local function prep(v, depth)
	if type(v) ~= "table" or depth > 64 then return v end
	if getmetatable(v) == ARRAY.__metatable and next(v) == nil then return SENTINEL end
	local out = {}
	for k, x in pairs(v) do out[k] = prep(x, depth + 1) end
	return out
end

function json.encode(v)
	if not used then return cjson.encode(v) end
	return (string.gsub(cjson.encode(prep(v, 0)), QUOTED, "[]"))
end

function json.decode(s)
	if type(s) ~= "string" then
		error("json.decode: expected a string, got " .. type(s), 2)
	end
	local ok, v = pcall(cjson.decode, s)
	if ok then return v end
	return nil, (string.gsub(tostring(v), "^.-:%d+: ", ""))
end

function json.array(t)
	t = t or {}
	if type(t) ~= "table" then
		error("json.array: expected a table, got " .. type(t), 2)
	end
	used = true
	if getmetatable(t) == ARRAY.__metatable then return t end
	return setmetatable(t, ARRAY)
end

return json
