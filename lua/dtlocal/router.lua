--- dtlocal.router: method and path patterns to handlers, for both dtlocal
-- servers (the answers themselves are dtlocal.http's).
--
--     local router = require "dtlocal.router"
--     local r = router.new{ not_found = function(method, path) return "..." end }
--     r:add("GET", "/process/session/{sessionId}", function(ctx, params) ... end)
--     local handler, params_or_status, allowed = r:match("GET", "/process/session/s1")
--     return r:dispatch(ctx)   -- the handler's results; 404/405 raised
local http = require "dtlocal.http"

local type, ipairs, setmetatable, error, tostring = type, ipairs, setmetatable, error, tostring
local concat, format, char = table.concat, string.format, string.char

local M = {}

local Router = {}
Router.__index = Router
Router.__name = "dtlocal.Router"

local function not_found(method, path)
  return format("no such route: %s %s", method, path)
end

local function not_allowed(method, path, allowed)
  return format("method %s not allowed on %s (allowed: %s)", method, path, allowed)
end

--- A new, empty router. opts (optional): not_found(method, path) and
-- not_allowed(method, path, allowed) word the 404 and 405 of dispatch.
function M.new(opts)
  opts = opts or {}
  return setmetatable({ routes = {}, not_found = opts.not_found or not_found,
                        not_allowed = opts.not_allowed or not_allowed }, Router)
end

-- Split "/a/b/c" into { "a", "b", "c" }; an empty path is { }. A trailing
-- slash is ignored ("/files/" matches "/files").
local function segments(path)
  local segs = {}
  for seg in path:gmatch("[^/]+") do segs[#segs + 1] = seg end
  return segs
end

-- path segments: the SDK's URL codec (a "+" stays a "+")
local unescape = require("daytona.wire").urldecode
M.unescape = unescape

--- Register handler for method and pattern. Pattern segments are literals,
-- `{name}` (one non-empty segment, percent-decoded into params.name) or, as
-- the last segment, `{name*}` (the rest of the path, zero or more segments,
-- kept raw without a leading slash, into params.name). The
-- first matching route wins, so add literal routes before parameterised ones
-- that would also match them (e.g. /process/session/entrypoint before
-- /process/session/{sessionId}).
function Router:add(method, pattern, handler)
  if type(handler) ~= "function" then
    error("bad argument #3 to 'add' (function expected)", 2)
  end
  local segs = segments(pattern)
  local parts = {}
  for i, s in ipairs(segs) do
    local name, star = s:match("^{([%w_]+)(%*?)}$")
    if star == "*" and i ~= #segs then
      error("bad argument #2 to 'add' ({name*} must be the last segment)", 2)
    end
    parts[i] = name and { param = name, rest = star == "*" } or { lit = s }
  end
  self.routes[#self.routes + 1] = { method = method:upper(), parts = parts, handler = handler,
                                    pattern = pattern }
  return self
end

--- Find the route for method and path (without the query string).
-- Returns handler, params, pattern; or nil, 404; or nil, 405, "GET, POST"
-- when the path exists for other methods only.
function Router:match(method, path)
  local segs = segments(path)
  local allowed = {}
  for _, r in ipairs(self.routes) do
    local np = #r.parts
    local rest = np > 0 and r.parts[np].rest
    if np == #segs or (rest and #segs >= np - 1) then
      local params, ok = {}, true
      for i, p in ipairs(r.parts) do
        if p.lit then
          if p.lit ~= segs[i] then ok = false; break end
        elseif p.rest then
          params[p.param] = table.concat(segs, "/", i)
        else
          params[p.param] = unescape(segs[i])
        end
      end
      if ok then
        if r.method == method or (method == "HEAD" and r.method == "GET") then
          return r.handler, params, r.pattern
        end
        allowed[#allowed + 1] = r.method
      end
    end
  end
  if #allowed > 0 then return nil, 405, concat(allowed, ", ") end
  return nil, 404
end

--- Route a request: the handler of ctx.method and `path` (default
-- ctx.path) is called as handler(ctx, params), ctx.params set, and its
-- results returned. Raises the HttpError 404 (no such path) or 405 (other
-- methods only), worded with ctx.path.
function Router:dispatch(ctx, path)
  local handler, params, allowed = self:match(ctx.method, path or ctx.path)
  if not handler then
    if params == 405 then
      http.raise(405, self.not_allowed(ctx.method, ctx.path, tostring(allowed)), "METHOD_NOT_ALLOWED")
    end
    http.raise(404, self.not_found(ctx.method, ctx.path), "NOT_FOUND")
  end
  ctx.params = params
  return handler(ctx, params)
end

return M
