-- testlib.lua - the tiny test library every tests/lua/test_*.lua file uses.
--
-- The runner (tests/lua_runner.c) loads this file first, inside a real
-- sandboxed walua state, then the test file, then calls T.finish().  The
-- runner provides fixture(name); when run under a plain lua5.4 (for quick
-- iteration: `lua5.4 -e 'package.path="lua/?.lua;"..package.path'
-- tests/lua/testlib.lua tests/lua/test_x.lua` is not needed, see README of
-- tests) we fall back to io.
--
-- API (globals):
--   test(name, fn)        run fn; an error inside it fails the test
--   eq(got, want, what)   deep equality (tables compared key by key)
--   ok(cond, what)        assert a condition
--   fixture(name)         the bytes of tests/fixtures/<name>
--   T.finish()            print "N passed, N failed"; returns failed count

T = { passed = 0, failed = 0 }

if fixture == nil then
	function fixture(name)
		local f = assert(io.open("tests/fixtures/" .. name, "rb"))
		local s = f:read("a")
		f:close()
		return s
	end
end

local function show(v)
	if type(v) == "string" then return string.format("%q", v) end
	return tostring(v)
end

-- Return nil when a and b are deeply equal, else a path and both values.
local function diff(a, b, path)
	if type(a) ~= "table" or type(b) ~= "table" then
		if a == b and math.type(a) == math.type(b) then return nil end
		return path .. ": got " .. show(a) .. " (" .. type(a) ..
		    "), want " .. show(b) .. " (" .. type(b) .. ")"
	end
	for k, v in pairs(b) do
		local d = diff(a[k], v, path .. "." .. tostring(k))
		if d then return d end
	end
	for k, v in pairs(a) do
		if b[k] == nil then
			return path .. "." .. tostring(k) .. ": unexpected " .. show(v)
		end
	end
	return nil
end

function eq(got, want, what)
	local d = diff(got, want, what or "value")
	if d then error(d, 2) end
end

function ok(cond, what)
	if not cond then error("failed: " .. (what or "condition"), 2) end
end

function test(name, fn)
	local okk, err = pcall(fn)
	if okk then
		T.passed = T.passed + 1
		print("ok   " .. name)
	else
		T.failed = T.failed + 1
		print("FAIL " .. name .. ": " .. tostring(err))
	end
end

function T.finish()
	print(string.format("%d passed, %d failed", T.passed, T.failed))
	return T.failed
end
