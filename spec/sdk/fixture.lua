--- Shared set-up of the SDK specs: a private local server per spec file
-- (spec/support/dtlocal.lua), a client for it, and a sandbox.
local daytona = require "daytona"

local M = {}

--- Start a private dtlocal; returns `{ api_url, toolbox_url, token, stop }`.
function M.server()
  return require("support.dtlocal").start()
end

--- A client for the server; `extra` adds configuration keys.
function M.client(srv, extra)
  local cfg = { api_key = srv.token, api_url = srv.api_url, target = "local" }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return daytona.new(cfg)
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
