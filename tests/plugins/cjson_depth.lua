-- expect: harmless — require "cjson" gives a read-only module without decode_max_depth/encode_max_depth (calling it raises), and decoding a 100000-deep body (or encoding a 100000-deep table) raises a depth error instead of crashing; the handler logs what it saw (probe) and returns
local log = require "walua.log"
local cjson = require "cjson"
local json = require "walua.json"

local function try(f, ...)
	local ok, a, b = pcall(f, ...)
	if not ok then return "raised: " .. tostring(a) end
	return "returned: " .. type(a) .. " " .. tostring(b)
end

return function(ev)
	if ev.text == "attack" then
		log.info("attack", { case = "cjson_depth" })
		local deep = ("["):rep(100000) .. ("]"):rep(100000)
		local deep_obj = ('{"a":'):rep(100000) .. "1" .. ("}"):rep(100000)
		local t = {}
		local cur = t
		for _ = 1, 100000 do cur[1] = {}; cur = cur[1] end
		log.info("probe", {
			decode_max_depth = type(cjson.decode_max_depth),
			call_decode_max_depth = try(function() return cjson.decode_max_depth(100000) end),
			encode_max_depth = type(cjson.encode_max_depth),
			call_encode_max_depth = try(function() return cjson.encode_max_depth(100000) end),
			set_decode_max_depth = try(function() cjson.decode_max_depth = function() end end),
			decode_invalid_numbers = type(cjson.decode_invalid_numbers),
			cjson_new = type(cjson.new),
			decode_deep_array = try(cjson.decode, deep),
			decode_deep_object = try(cjson.decode, deep_obj),
			encode_deep = try(cjson.encode, t),
			json_decode_deep = try(json.decode, deep),
			json_encode_deep = try(json.encode, t),
			require_cjson_safe = try(require, "cjson.safe"),
		})
		return
	end
	log.info("handled", { text = ev.text, shallow = cjson.decode('[[1]]')[1][1] })
end
