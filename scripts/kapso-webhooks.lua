-- kapso-webhooks - manage the webhooks of a Kapso WhatsApp config.
--
-- Uses kapso.api_key and kapso.api_url of walua's config (KAPSO_API_KEY and
-- WALUA_KAPSO_API_URL win over them).

local cli = require "walua.cli"
local kapso = require "walua.kapso"
local settings = require "walua.settings"

local USAGE = [[
usage: walua run kapso-webhooks COMMAND --config-id ID [options] [--json]
  list [--url-cont S] [--active true|false]
  get --id ID
  create --url URL [--secret-key S] [--events E,E] [--inactive]
  update --id ID [--url URL] [--secret-key S] [--events E,E]
         [--active true|false]
  delete --id ID
--secret-key defaults to the secret of the walua kapso endpoint at --url's
path.  Secrets are shown masked.]]

local opts, pos, usage_error, fail = cli.start("kapso-webhooks", USAGE, { ... },
    { json = true, inactive = true })
local cmd = pos[1]
local cfg = opts["config-id"]
if not cfg then usage_error("--config-id is required") end

local function endpoint_secret(url)
	local path = url and url:match("^https?://[^/]+(/.*)$")
	for _, ep in ipairs(settings.endpoints or {}) do
		if ep.path == path and ep.auth and ep.auth.type == "kapso" then
			return ep.auth.secret
		end
	end
end

local function bool(s, name)
	if s == nil then return nil end
	if s == "true" then return true end
	if s == "false" then return false end
	usage_error("--" .. name .. " must be true or false")
end

local COLUMNS = { "id", "url", "events", "active", "secret_key" }

local json = require "walua.json"

local function rows(list)
	local out = {}
	for i, w in ipairs(list) do out[i] = cli.masked(w) end
	return json.array(out)
end

if cmd == "list" then
	local list, meta = kapso.webhooks.list(cfg, { url_cont = opts["url-cont"],
	    active = bool(opts.active, "active") })
	if not list then fail(meta) end
	cli.output(opts, rows(list), cli.table(rows(list), COLUMNS))
elseif cmd == "get" then
	if not opts.id then usage_error("--id is required") end
	local w, err = kapso.webhooks.get(cfg, opts.id)
	if not w then fail(err) end
	cli.output(opts, cli.masked(w), cli.table({ cli.masked(w) }, COLUMNS))
elseif cmd == "create" then
	if not opts.url then usage_error("--url is required") end
	local spec = { url = opts.url,
	    secret_key = opts["secret-key"] or endpoint_secret(opts.url),
	    active = not opts.inactive }
	if opts.events then spec.events = cli.list(opts.events) end
	local w, err = kapso.webhooks.create(cfg, spec)
	if not w then fail(err) end
	cli.output(opts, cli.masked(w), "created webhook " .. tostring(w.id))
elseif cmd == "update" then
	if not opts.id then usage_error("--id is required") end
	local changes = { url = opts.url, secret_key = opts["secret-key"],
	    active = bool(opts.active, "active") }
	if opts.events then changes.events = cli.list(opts.events) end
	local w, err = kapso.webhooks.update(cfg, opts.id, changes)
	if not w then fail(err) end
	cli.output(opts, cli.masked(w), "updated webhook " .. tostring(opts.id))
elseif cmd == "delete" then
	if not opts.id then usage_error("--id is required") end
	local ok, err = kapso.webhooks.delete(cfg, opts.id)
	if not ok then fail(err) end
	cli.output(opts, { deleted = opts.id }, "deleted webhook " .. opts.id)
else
	usage_error(cmd and ("unknown command '" .. cmd .. "'") or "no command")
end
