--- Client configuration: explicit settings, the environment and `.env`
-- files, resolved the way the official SDKs do (doc/protocol.md §1.2).
--
-- Precedence for each value: the table given to `daytona.new`, then the
-- process environment, then `.env.local`, then `.env` (both read from the
-- current directory; only `DAYTONA_*` keys are taken and the process
-- environment is never modified), as the official SDKs do. The API URL
-- travels with the credential: a key is only sent to the URL configured in
-- the same place (see `resolve` for the exact rule). With no credentials
-- at all and no API URL, the client uses the local server
-- (`daytona.localserver`).
local errors = require "daytona.errors"
local check = require "daytona.check"

local type, pairs, ipairs, tostring, error, io, os = type, pairs, ipairs, tostring, error, io, os

local M = {}

--- The default API URL (Daytona's cloud).
M.DEFAULT_API_URL = "https://app.daytona.io/api"

local FIELDS = check.set("api_key", "jwt_token", "organization_id", "api_url", "server_url",
  "target", "retry", "on_request", "sdk_version", "local_server")

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

-- The places a setting can come from, in order of precedence: the options,
-- the process environment, `.env.local`, `.env`. Each dotenv file is its
-- own place: `.env` is often committed and `.env.local` holds the secrets,
-- so a URL in one must not steer a key from the other.
local function places(user, getenv, dir)
  local opt_names = {
    DAYTONA_API_KEY = "api_key", DAYTONA_JWT_TOKEN = "jwt_token", DAYTONA_ORGANIZATION_ID = "organization_id",
    DAYTONA_TARGET = "target", DAYTONA_API_URL = "api_url", DAYTONA_SERVER_URL = "server_url",
  }
  local function file(name)
    local vars
    return { what = name .. " in " .. dir, get = function(k)
      vars = vars or M.read_dotenv(dir .. "/" .. name)
      return nonempty(vars[k])
    end }
  end
  return {
    { what = "the options", get = function(name) return nonempty(user[opt_names[name]]) end },
    { what = "the environment", get = function(name) return nonempty(getenv(name)) end },
    file(".env.local"),
    file(".env"),
  }
end

local function url_of(place)
  return place.get("DAYTONA_API_URL") or place.get("DAYTONA_SERVER_URL")
end

local function ambiguous(msg)
  error(errors.DaytonaError(msg, { code = "AMBIGUOUS_ENDPOINT" }), 0)
end

--- Resolve the configuration.
--
-- Each setting is taken from the first place that has it: the options
-- table, then the process environment, then `.env.local`, then `.env` in
-- the current directory (only `DAYTONA_*` keys; the environment is never
-- modified). The credential is the first place's `DAYTONA_API_KEY`, else
-- its `DAYTONA_JWT_TOKEN` (an API key wins over a JWT of the same place).
--
-- The API URL goes with the credential, so that a key is never sent to an
-- endpoint the user did not configure together with it (a `.env` in the
-- working directory may come with a cloned repository, so its URL must not
-- steer a key it did not supply):
--
-- * `api_url` in the options is used whatever place the key comes from;
-- * a key given in the options uses `DAYTONA_API_URL` from the environment,
--   else Daytona's cloud; a dotenv file naming a URL then is refused;
-- * a key from the environment, `.env.local` or `.env` uses the
--   `DAYTONA_API_URL` of that same place, or Daytona's cloud when no place
--   names a URL;
-- * the choice is refused with `AMBIGUOUS_ENDPOINT` rather than guessed
--   when the key's place names no URL while another place does (a key
--   exported in the environment beside a `.env` naming a server, a key in
--   `.env` beside a `DAYTONA_API_URL` in the environment), or when a place
--   of higher precedence names another URL (the environment's URL beside
--   the key and URL of a `.env`);
-- * with no credential anywhere and no URL anywhere the client uses the
--   local server (`daytona.localserver`); a URL without a credential is an
--   error.
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
--   DaytonaError (code `AMBIGUOUS_ENDPOINT`) when the URL of the key's place
--   and another place's URL disagree
function M.resolve(user, ctx)
  user = validate(user)
  ctx = ctx or {}
  local getenv = ctx.getenv or os.getenv
  local dir = ctx.dir or "."
  local cfg = {
    retry = user.retry, on_request = user.on_request, sdk_version = user.sdk_version,
    local_server = user.local_server,
  }
  local list = places(user, getenv, dir)
  local function lookup(name)
    for _, p in ipairs(list) do
      local v = p.get(name)
      if v then return v end
    end
  end

  -- the credential: the first place that has one
  local cred_place
  for i, p in ipairs(list) do
    local key = p.get("DAYTONA_API_KEY")
    if key then cfg.api_key, cred_place = key, i; break end
    local jwt = p.get("DAYTONA_JWT_TOKEN")
    if jwt then cfg.jwt_token, cred_place = jwt, i; break end
  end
  cfg.organization_id = lookup("DAYTONA_ORGANIZATION_ID")
  cfg.target = lookup("DAYTONA_TARGET")

  -- the URL that goes with it
  local explicit_url = url_of(list[1])
  local cred = cfg.api_key and "DAYTONA_API_KEY" or "DAYTONA_JWT_TOKEN"
  if explicit_url then
    cfg.api_url = explicit_url
  elseif cred_place == 1 then
    -- a key in the code goes to the environment's URL; a dotenv file's URL
    -- steers only the key beside it
    cfg.api_url = url_of(list[2])
    if not cfg.api_url then
      for i = 3, 4 do
        local other = url_of(list[i])
        if other then
          ambiguous(("the API endpoint is ambiguous: the key was given in the options, without api_url, but %s says "
            .. "DAYTONA_API_URL=%s; pass api_url explicitly or set DAYTONA_API_URL in the environment")
            :format(list[i].what, other))
        end
      end
    end
  elseif cred_place then
    local own = url_of(list[cred_place])
    for i = 2, 4 do
      local other = url_of(list[i])
      if i ~= cred_place and other and other ~= own and (own == nil or i < cred_place) then
        ambiguous(("the API endpoint is ambiguous: %s comes from %s, %s, but %s says DAYTONA_API_URL=%s; "
          .. "set DAYTONA_API_URL in the same place as the key, or pass api_url explicitly")
          :format(cred, list[cred_place].what,
            own and ("with DAYTONA_API_URL=" .. own) or "without DAYTONA_API_URL (Daytona's cloud)",
            list[i].what, other))
      end
    end
    cfg.api_url = own
  else
    cfg.api_url = url_of(list[2]) or url_of(list[3]) or url_of(list[4])
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
