--- Client configuration: explicit settings, the environment and `.env`
-- files, resolved the way the official SDKs do (protocol §1.2).
--
-- Precedence for each value: the table given to `daytona.new`, then the
-- process environment, then `.env.local`, then `.env` (both read from the
-- current directory; only `DAYTONA_*` keys are taken and the process
-- environment is never modified). An API key wins over a JWT. The API URL is
-- taken from the process environment only, never from a dotenv file, and a
-- dotenv file that names an endpoint while the environment names another is
-- an error (the endpoint decides where the credential is sent; this is the
-- rule of the 0.218 SDKs). With no credentials at all and no API URL, the
-- client uses the local server (`daytona.localserver`).
local errors = require "daytona.errors"
local check = require "daytona.check"

local type, pairs, ipairs, tostring, error, io, os = type, pairs, ipairs, tostring, error, io, os

local M = {}

--- The default API URL (Daytona's cloud).
M.DEFAULT_API_URL = "https://app.daytona.io/api"

local FIELDS = check.set("api_key", "jwt_token", "organization_id", "api_url", "server_url",
  "target", "retry", "on_request", "sdk_version", "local_server")

local ENV_KEYS = {
  api_key = "DAYTONA_API_KEY",
  jwt_token = "DAYTONA_JWT_TOKEN",
  organization_id = "DAYTONA_ORGANIZATION_ID",
  target = "DAYTONA_TARGET",
}

local function unquote(v)
  v = v:match("^%s*(.-)%s*$")
  local q = v:sub(1, 1)
  if q == '"' or q == "'" then
    local close = v:find(q, 2, true)
    if q == '"' then
      -- find the closing quote that is not escaped
      local i = 2
      close = nil
      while i <= #v do
        local c = v:sub(i, i)
        if c == "\\" then i = i + 2
        elseif c == '"' then close = i; break
        else i = i + 1 end
      end
    end
    if close then
      v = v:sub(2, close - 1)
      if q == '"' then
        v = v:gsub("\\([nrt\"\\])", { n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\" })
      end
      return v
    end
  end
  return (v:gsub("%s+#.*$", ""))     -- an unquoted value ends at a comment
end

--- Parse a dotenv file, keeping only `DAYTONA_*` keys.
-- Lines are `KEY=VALUE`, optionally prefixed by `export`; `#` starts a
-- comment; values may be single- or double-quoted.
-- @param path string
-- @return table of key -> value (empty if the file does not exist)
function M.read_dotenv(path)
  local out = {}
  local f = io.open(path, "r")
  if not f then return out end
  for line in f:lines() do
    local k, v = line:match("^%s*export%s+([%w_]+)%s*=(.*)$")
    if not k then k, v = line:match("^%s*([%w_]+)%s*=(.*)$") end
    if k and k:match("^DAYTONA_") then out[k] = unquote(v) end
  end
  f:close()
  return out
end

local function validate(user)
  if user == nil then return {} end
  check.options(user, "new", FIELDS, "config")
  for _, k in ipairs({ "api_key", "jwt_token", "organization_id", "api_url", "server_url", "target", "sdk_version" }) do
    check.optstring(user[k], "new", k)
  end
  if user.retry ~= nil and user.retry ~= false then
    check.options(user.retry, "new", check.set("retries", "base_delay", "max_delay", "max_retry_after"), "retry")
    check.optinteger(user.retry.retries, "new", "retry.retries", 0, 100)
    for _, k in ipairs({ "base_delay", "max_delay", "max_retry_after" }) do
      check.timeout(user.retry[k], "new", nil, "retry." .. k)
    end
  end
  check.optfunction(user.on_request, "new", "on_request")
  if user.local_server ~= nil and type(user.local_server) ~= "table" and type(user.local_server) ~= "boolean" then
    check.argerror("new", "local_server", "table or boolean expected")
  end
  return user
end

local function nonempty(v)
  if v == nil or v == "" then return nil end
  return v
end

--- Resolve the configuration.
-- @param user the table given to `daytona.new` (may be nil): `api_key`,
--   `jwt_token`, `organization_id`, `api_url` (`server_url` is the deprecated
--   alias), `target`, `retry` (table or false), `on_request` (a function
--   called as `f(method, url, attempt)` before every HTTP request),
--   `local_server` (false: never fall back to the local server; a table:
--   options for `daytona.localserver.ensure`)
-- @param ctx optional `{ getenv = function(name), dir = "." }` (for tests)
-- @return table with `api_url`, `target`, and `api_key` or `jwt_token` +
--   `organization_id`, or `use_local = true` when the local server applies
-- @raise DaytonaValidationError for a bad table; DaytonaAuthenticationError
--   for a JWT without organization or an API URL without credentials;
--   DaytonaError for an ambiguous endpoint
function M.resolve(user, ctx)
  user = validate(user)
  ctx = ctx or {}
  local getenv = ctx.getenv or os.getenv
  local dir = ctx.dir or "."
  local cfg = {
    retry = user.retry, on_request = user.on_request, sdk_version = user.sdk_version,
    local_server = user.local_server,
  }
  local explicit_url = nonempty(user.api_url) or nonempty(user.server_url)
  cfg.api_key = nonempty(user.api_key)
  cfg.jwt_token = nonempty(user.jwt_token)
  cfg.organization_id = nonempty(user.organization_id)
  cfg.target = nonempty(user.target)
  cfg.api_url = explicit_url

  local complete = cfg.api_url and cfg.target and
    (cfg.api_key or (cfg.jwt_token and cfg.organization_id))
  if not complete then
    -- lazily read the dotenv files: process env > .env.local > .env
    local files
    local function dotenv()
      if not files then
        files = { M.read_dotenv(dir .. "/.env.local"), M.read_dotenv(dir .. "/.env") }
      end
      return files
    end
    local function lookup(name)
      local v = nonempty(getenv(name))
      if v then return v end
      for _, f in ipairs(dotenv()) do
        v = nonempty(f[name])
        if v then return v end
      end
      return nil
    end
    -- an environment API key is ignored when a JWT was configured explicitly
    if not cfg.api_key and not cfg.jwt_token then cfg.api_key = lookup(ENV_KEYS.api_key) end
    if not cfg.api_key then
      cfg.jwt_token = cfg.jwt_token or lookup(ENV_KEYS.jwt_token)
    end
    cfg.organization_id = cfg.organization_id or lookup(ENV_KEYS.organization_id)
    cfg.target = cfg.target or lookup(ENV_KEYS.target)
    if not cfg.api_url then
      local env_url = nonempty(getenv("DAYTONA_API_URL")) or nonempty(getenv("DAYTONA_SERVER_URL"))
      local file_url
      for _, f in ipairs(dotenv()) do
        file_url = file_url or nonempty(f.DAYTONA_API_URL) or nonempty(f.DAYTONA_SERVER_URL)
      end
      if env_url and file_url and env_url ~= file_url then
        error(errors.DaytonaError(("the API endpoint is ambiguous: the environment says %s and a .env file in %s says %s; pass api_url explicitly")
          :format(env_url, dir, file_url), { code = "AMBIGUOUS_ENDPOINT" }), 0)
      end
      if file_url and not env_url then
        io.stderr:write("daytona: ignoring DAYTONA_API_URL from a .env file (the endpoint is taken from the environment only)\n")
      end
      cfg.api_url = env_url
    end
  end

  if cfg.api_key then
    cfg.jwt_token = nil
  elseif cfg.jwt_token then
    if not cfg.organization_id then
      error(errors.DaytonaAuthenticationError(
        "a JWT needs an organization id: set organization_id or DAYTONA_ORGANIZATION_ID",
        { code = "MISSING_ORGANIZATION" }), 0)
    end
  elseif cfg.api_url or cfg.local_server == false then
    error(errors.DaytonaAuthenticationError(
      "no credentials: set DAYTONA_API_KEY, or both DAYTONA_JWT_TOKEN and DAYTONA_ORGANIZATION_ID",
      { code = "MISSING_CREDENTIALS" }), 0)
  else
    cfg.use_local = true
    return cfg
  end
  cfg.api_url = (cfg.api_url or M.DEFAULT_API_URL):gsub("/+$", "")
  if not cfg.api_url:match("^https?://") then
    check.argerror("new", "api_url", "http:// or https:// URL expected, got " .. tostring(cfg.api_url))
  end
  return cfg
end

return M
