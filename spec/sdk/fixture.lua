--- Shared set-up of the SDK specs: a private local server per spec file
-- (spec/support/dtlocal.lua), a client for it, and a sandbox.
local daytona = require "daytona"

local M = {}

-- Until spec/support/dtlocal.lua exists: `dtlocal serve --port 0` on a
-- temp state dir, read its banner, stop it with SIGTERM.
local function own_server()
  local rprocess = require "daytona.runtime.process"
  local build = os.getenv("DTLUA_BUILD") or "build"
  -- not helper.tmpdir(): specs clean those after each test, and this one
  -- must live as long as the server
  local mk = io.popen("mktemp -d \"${TMPDIR:-/tmp}/dtlua-sdk-server.XXXXXX\"")
  local state = mk:read("l")
  mk:close()
  assert(state and state ~= "", "mktemp failed")
  local p = rprocess.spawn({ build .. "/bin/dtlocal", "serve", "--port", "0", "--state", state },
    { stdin = "null", stderr = "stdout" })
  local info = {}
  local deadline = require("daytona.core").now() + 30
  for line in p:lines("stdout", 30) do
    info.api_url = info.api_url or line:match("API (%S+)")
    info.toolbox_url = info.toolbox_url or line:match("toolbox (%S+)")
    info.token = info.token or line:match("token (%S+)")
    if info.api_url and info.token and info.toolbox_url then break end
    assert(require("daytona.core").now() < deadline, "dtlocal did not start")
  end
  assert(info.api_url and info.token, "dtlocal printed no API URL and token")
  -- keep draining its log so it never blocks on a full pipe
  local drain = require("daytona.runtime.scheduler").spawn(function()
    for _ in p:lines("stdout") do end
  end)
  function info.stop()
    p:kill("TERM")
    p:wait(20)
    p:close()
    drain:cancel()
    os.execute("rm -rf '" .. state:gsub("'", "'\\''") .. "'")
  end
  return info
end

--- Start a private dtlocal; returns `{ api_url, toolbox_url, token, stop }`.
function M.server()
  local ok, support = pcall(require, "support.dtlocal")
  if ok then return support.start() end
  return own_server()
end

--- A client for the server; `extra` adds configuration keys.
function M.client(srv, extra)
  local cfg = { api_key = srv.token, api_url = srv.api_url, target = "local" }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return daytona.new(cfg)
end

--- A client for `srv` and a sandbox it creates with `params` (default `{}`).
function M.sandbox(srv, params)
  local client = M.client(srv)
  return client, client:create(params or {})
end

--- Teardown: delete the sandboxes given (nil ones skipped; without waiting,
-- errors ignored), then stop the server `srv` if there is one.
function M.release(srv, ...)
  for i = 1, select("#", ...) do
    local sb = select(i, ...)
    if sb then pcall(sb.delete, sb, { wait = false }) end
  end
  if srv then srv.stop() end
end

--- pcall(fn, ...) that must fail; returns the error.
function M.fails(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

--- Count the requests a client makes (through its `on_request` hook).
function M.counting_client(srv)
  local counter = { n = 0, log = {} }
  local c = M.client(srv, { on_request = function(method, url)
    counter.n = counter.n + 1
    counter.log[#counter.log + 1] = method .. " " .. url
  end })
  return c, counter
end

return M
