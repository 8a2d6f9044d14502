-- examples/background_server.lua: a web server running in the background
-- of a sandbox, reached from here through its preview link.
--
--     build/bin/dtlua examples/background_server.lua
--
-- A server must outlive the command that starts it, so it runs in a
-- session with `run_async` (a plain exec would wait for it to end). A
-- health check polls it until it answers; then we fetch a page through
-- the preview link (which needs the sandbox's preview token unless the
-- sandbox is public) and through a signed preview URL (token in the URL),
-- and read the server's log from its session command.
local daytona = require "daytona"
local http = daytona.http

local client = daytona.new()
local sb <close> = client:create{ language = "python", labels = { example = "background-server" } }
print(("created sandbox %s"):format(sb.id))

-- A page to serve.
local site = sb:get_work_dir() .. "/site"
sb.fs:upload_file({ data = "<h1>Hello from a sandbox</h1>\n" }, site .. "/index.html")

-- Any port will do: the sandbox has a network of its own. The server
-- listens on all its addresses, where the preview link reaches it (a
-- server bound to the sandbox's loopback only is not reachable from
-- outside). (Lua 5.4 seeds math.random differently on each run.)
local port = math.random(20000, 29999)
local bind = "0.0.0.0"

local session = "web"
sb.process:create_session(session)
local cmd = sb.process:execute_session_command(session, {
  command = ("python3 -m http.server %d --bind %s --directory %s"):format(port, bind, site),
  run_async = true,                  -- returns at once with the command's id
})
print(("started the server on port %d: session %q, command %s"):format(port, session, cmd.cmd_id))

-- Health check: ask the server from inside the sandbox until it answers
-- (any HTTP status will do), giving up after about 15 s or if it exits.
local ready = false
for attempt = 1, 75 do
  local r = sb.process:exec(("curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/ || true"):format(port),
    { timeout = 5 })
  local code = r.result:match("%d%d%d")
  if code and code ~= "000" then
    print(("server ready after %d check(s): HTTP %s"):format(attempt, code))
    ready = true
    break
  end
  local state = sb.process:get_session_command(session, cmd.cmd_id)
  if state.exit_code then
    error(("the server exited with code %d:\n%s"):format(state.exit_code,
      sb.process:get_session_command_logs(session, cmd.cmd_id).output))
  end
  daytona.sleep(0.2)
end
assert(ready, "the server did not answer in time")

-- Through the preview link: the token goes in a header.
local link = sb:get_preview_link(port)
print("preview link: " .. link.url)
local headers = { ["X-Daytona-Skip-Preview-Warning"] = "true" }
if link.token and link.token ~= "" then headers["X-Daytona-Preview-Token"] = link.token end
local resp = http.request{ url = link.url .. "/index.html", headers = headers, timeout = 30 }
print(("GET via preview link: HTTP %d: %s"):format(resp.status, resp.body:gsub("%s+$", "")))
assert(resp.status == 200, "unexpected status " .. resp.status)

-- Through a signed URL: no header needed, valid for 60 s, revocable.
local signed = sb:create_signed_preview_url(port, { expires_in_seconds = 60 })
resp = http.request{ url = signed.url .. "/index.html", headers = { ["X-Daytona-Skip-Preview-Warning"] = "true" },
  timeout = 30 }
print(("GET via signed URL: HTTP %d"):format(resp.status))
assert(resp.status == 200, "unexpected status " .. resp.status)
sb:expire_signed_preview_url(port, signed.token)
resp = http.request{ url = signed.url .. "/index.html", headers = { ["X-Daytona-Skip-Preview-Warning"] = "true" },
  timeout = 30 }
print(("expired the signed URL; GET via it now: HTTP %d"):format(resp.status))

-- The server's log so far (http.server logs each request on stderr).
local logs = sb.process:get_session_command_logs(session, cmd.cmd_id)
print("server log:")
for line in (logs.stdout .. logs.stderr):gmatch("[^\n]+") do print("  " .. line) end

-- Deleting the session stops the server; the sandbox goes at scope end.
sb.process:delete_session(session)
print("deleted the session; deleting sandbox " .. sb.id)
