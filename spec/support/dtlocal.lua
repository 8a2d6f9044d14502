--- A private dtlocal server for one spec file.
--
--     local dtlocal = require "support.dtlocal"
--     local srv = dtlocal.start()        -- inside helper.run (a task) or not
--     ... srv.api_url, srv.toolbox_url, srv.token ...
--     srv.stop()                          -- in teardown
--
-- start(opts) runs `<build>/bin/dtlocal serve --port 0 --state <tmpdir>
-- --token <random>` (build = $DTLUA_BUILD or "build"), waits until it
-- answers and returns { api_url, toolbox_url, base_url, token, state_dir,
-- pid, log = function() -> the server's stderr so far, restart = function()
-- (stop the server, keep its state, start it again on the same state dir;
-- updates the urls), crash = function() (SIGKILL to the server alone, as a
-- crash would: its sandboxes, groups and link dir stay behind; restart()
-- then starts it again on the same state dir), stop = function() }. stop()
-- ends the server (SIGTERM,
-- then SIGKILL) and with it every sandbox it started, then removes the temp
-- dir. The server runs under `setpriv --pdeathsig TERM` (when setpriv is
-- there), so a spec process that dies without stop() takes it, and its
-- sandboxes, along. opts: minute_seconds (the server's --minute-seconds),
-- state_dir (reuse a state dir instead of a fresh one; not removed by stop).
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local process = require "daytona.runtime.process"
local helper = require "support.helper"

local M = {}

--- The dtlocal binary of the build under test (absolute path).
function M.binary()
  return helper.build_path("bin/dtlocal")
end

local function read_json(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return require("dtlocal.http").json.decode(text)
end

-- Run fn in a task when we are not in one (the process and the sleeps
-- need the scheduler either way; outside a task wait() drives the loop).
local function in_task(fn)
  if scheduler.running() then return fn() end
  return helper.run(fn)
end

local function launch(srv)
  local argv = { M.binary(), "serve", "--port", "0", "--state", srv.state_dir, "--token", srv.token }
  -- if the spec process dies without stop() (a timeout, a kill), the server
  -- gets SIGTERM and stops its sandboxes instead of living on
  if os.execute("command -v setpriv >/dev/null 2>&1") then
    table.insert(argv, 1, "--")
    table.insert(argv, 1, "TERM")
    table.insert(argv, 1, "--pdeathsig")
    table.insert(argv, 1, "setpriv")
  end
  if srv.minute_seconds then
    argv[#argv + 1] = "--minute-seconds"
    argv[#argv + 1] = tostring(srv.minute_seconds)
  end
  os.remove(srv.state_dir .. "/server.json")
  local p = process.spawn(argv, { stdin = "null", stdout = "pipe", stderr = "stdout", env = srv.env })
  srv.proc = p
  srv.pid = p:pid()
  -- the server's output is drained at all times (a full pipe would stall
  -- it) and kept for the failure messages of specs
  local lines = srv.lines
  srv.drain = scheduler.spawn(function()
    for line in p:lines() do
      lines[#lines + 1] = line
      if #lines > 2000 then table.remove(lines, 1) end
    end
  end)
  srv.drain.observed = true
  local deadline = core.now() + 20
  while true do
    local info = read_json(srv.state_dir .. "/server.json")
    if type(info) == "table" and info.pid == srv.pid then
      srv.api_url, srv.toolbox_url = info.api_url, info.toolbox_url
      srv.base_url = info.api_url:gsub("/api$", "")
      return
    end
    if p:status() ~= nil then
      error("dtlocal serve exited before it answered:\n" .. table.concat(lines, "\n"), 0)
    end
    if core.now() > deadline then
      error("dtlocal serve did not answer within 20 s:\n" .. table.concat(lines, "\n"), 0)
    end
    scheduler.sleep(0.01)
  end
end

local function terminate(srv)
  local p = srv.proc
  if not p then return end
  srv.proc = nil
  if p:status() == nil then
    p:kill("TERM", false)
    if not p:wait(20) then p:kill("KILL", true); p:wait(5) end
  end
  pcall(scheduler.timeout, 2, function() srv.drain:wait() end)
  p:close()
end

function M.start(opts)
  opts = opts or {}
  return in_task(function()
    -- not helper.tmpdir(): specs clean those after each test, and this
    -- one must live as long as the server
    local dir
    if not opts.state_dir then
      local mk = io.popen("mktemp -d \"${TMPDIR:-/tmp}/dtlocal-spec.XXXXXX\"")
      dir = mk:read("l")
      mk:close()
      assert(dir and dir ~= "", "mktemp failed")
    end
    local srv = {
      token = "spec-" .. core.util.hex(core.util.random_bytes(16)),
      state_dir = opts.state_dir or (dir .. "/state"),
      minute_seconds = opts.minute_seconds,
      env = opts.env,   -- the server's environment (nil: ours)
      lines = {},
    }
    function srv.log() return table.concat(srv.lines, "\n") end
    function srv.restart()
      in_task(function()
        terminate(srv)
        launch(srv)
      end)
    end
    function srv.crash()
      in_task(function()
        local p = srv.proc
        if not p then return end
        srv.proc = nil
        p:kill("KILL", false)
        p:wait(10)
        pcall(scheduler.timeout, 2, function() srv.drain:wait() end)
        p:close()
      end)
    end
    function srv.stop()
      in_task(function() terminate(srv) end)
      if dir then os.execute("rm -rf '" .. dir .. "'") end
    end
    launch(srv)
    return srv
  end)
end

--- One request to srv's API (or to opts.base); returns status, the body
-- (decoded when JSON, else the text) and the headers. opts: token (false
-- sends none), headers, base, timeout (default 60 s).
function M.request(srv, method, path, body, opts)
  opts = opts or {}
  local http = require "daytona.runtime.http"
  local json = require("dtlocal.http").json
  local headers = {}
  if opts.token ~= false then headers.Authorization = "Bearer " .. (opts.token or srv.token) end
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  local r = http.request{
    url = (opts.base or srv.api_url) .. path, method = method, headers = headers,
    body = body ~= nil and (type(body) == "string" and body or json.encode(body)) or nil,
    timeout = opts.timeout or 60,
  }
  local decoded = r.body
  if r.body and r.body ~= "" and (r.headers["content-type"] or ""):find("json", 1, true) then
    decoded = json.decode(r.body)
  end
  return r.status, decoded, r.headers
end

--- M.request that must answer `want`; returns the body, or raises naming
-- the request and what came back.
function M.expect(srv, want, method, path, body, opts)
  local st, b = M.request(srv, method, path, body, opts)
  if st ~= want then
    local json = require("dtlocal.http").json
    error(("%s %s: expected %d, got %d: %s"):format(method, path, want, st,
      type(b) == "table" and json.encode(b) or tostring(b)), 3)
  end
  return b
end

--- Run `command` in sandbox `id` (POST /process/execute); returns the
-- output and the exit code (raises unless the daemon answers 200).
function M.exec(srv, id, command, timeout)
  local st, b = M.request(srv, "POST", "/process/execute", { command = command, timeout = timeout },
                          { base = srv.toolbox_url .. "/" .. id })
  if st ~= 200 then
    error(("exec in %s: HTTP %d: %s"):format(id, st, type(b) == "table"
      and require("dtlocal.http").json.encode(b) or tostring(b)), 3)
  end
  return b.result, b.exitCode
end

--- Wait until sandbox `id` of srv is started, polling its state (raises
-- after `timeout` seconds, default 30).
function M.wait_started(srv, id, timeout, interval)
  helper.eventually(function() return M.expect(srv, 200, "GET", "/sandbox/" .. id).state == "started" end,
    timeout or 30, interval)
end

--- POST /sandbox with `body` (default {}) and wait until it is started;
-- returns the create's answer.
function M.create_started(srv, body, timeout)
  local s = M.expect(srv, 200, "POST", "/sandbox", body or {})
  M.wait_started(srv, s.id, timeout)
  return s
end

return M
