local t = {}
for i = 1, 3 do
	t[#t + 1] = { path = "/w/" .. i, provider = "insider",
	    auth = { type = "bearer", token = string.rep("x", i) } }
end
return { listen = "[::1]:" .. (8000 + 80), endpoints = t,
    limits = { max_queue = 1 << 20 } }
