-- expect: harmless — a handler that keeps ev (in a global: refused; in an upvalue table: allowed) and reads it on a later event sees the old event's own data, intact, never as the current one: the current ev is a fresh table with the current text and id, and writes to the old table do not reach it; nothing crashes
local log = require "walua.log"
local kept = {}

local function walk(t, depth, seen)
	-- touch every field of a kept table (a stale reference must still be valid)
	if depth > 20 or seen[t] then return 0 end
	seen[t] = true
	local n = 0
	for k, v in pairs(t) do
		n = n + 1
		if type(v) == "table" then n = n + walk(v, depth + 1, seen) end
	end
	return n
end

return function(ev)
	local prev = kept[#kept]
	local global_ok, global_err = pcall(function() last_ev = ev end)
	local fields = {
		text = ev.text,
		cur_id = ev.id,
		kept_count = #kept,
		global_keep = global_ok and "ran" or tostring(global_err),
	}
	if prev then
		fields.prev_text = prev.text
		fields.prev_id = prev.id
		fields.prev_message_id = prev.message_id
		fields.prev_fields = walk(prev, 0, {})
		fields.same_table = rawequal(prev, ev)
		fields.same_raw = rawequal(prev.raw, ev.raw)
		-- scribble on the old event: the current one must not change
		prev.text = "scribbled"
		prev.id = "scribbled"
		fields.cur_raw_from = ev.raw and ev.raw.from
		if type(prev.raw) == "table" then
			for k in pairs(prev.raw) do prev.raw[k] = "scribbled" end
		end
		fields.cur_text_after = ev.text
		fields.cur_id_after = ev.id
		fields.cur_raw_from_after = ev.raw and ev.raw.from
	end
	kept[#kept + 1] = ev
	if ev.text == "attack" then
		log.info("attack", { case = "ev_keep" })
		log.info("probe", fields)
		return
	end
	log.info("handled", fields)
end
