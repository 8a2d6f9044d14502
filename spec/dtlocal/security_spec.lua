-- Attacks from inside a sandbox on what dtlocal, running as root, does on
-- the host (doc/sandbox.md, "Threat model"). Each case is the attack as
-- sandbox code would run it, and checks that it does not reach beyond the
-- sandbox.
local core = require "daytona.core"
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"

local srv

local function ok(want, method, path, body) return dtlocal.expect(srv, want, method, path, body) end
local function call(method, path, body, opts) return dtlocal.request(srv, method, path, body, opts) end
local function exec(id, command, timeout) return dtlocal.exec(srv, id, command, timeout or 30) end

local function create(body) return dtlocal.create_started(srv, body) end

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- The path dtlocal connects to for a sandbox's daemon, found from the host
-- as a sandbox could at best guess it: the socket named after the id in a
-- dtlocal socket dir.
local function socket_of(id)
  local h = io.popen("ls -d /tmp/dtlocal.*/" .. id .. ".sock 2>/dev/null")
  local p = h:read("l")
  h:close()
  return p
end

describe("dtlocal under attack from a sandbox", function()
  setup(function() srv = dtlocal.start() end)
  teardown(function() if srv then srv.stop() end end)

  it("cannot be made to run one sandbox's calls in another through its socket path", function()
    helper.run(function()
      local a, b = create(), create()
      local run = ok(200, "GET", "/sandbox/" .. a.id).id
      -- the attack of the security review, and the same with the socket's
      -- present place: swap the daemon's socket for a link to B's
      local targets = {
        srv.state_dir .. "/sandboxes/" .. b.id .. "/run/toolbox.sock",
        socket_of(b.id) or "/nonexistent",
      }
      for _, target in ipairs(targets) do
        exec(a.id, "cd /run/dtlua 2>/dev/null && { mv toolbox.sock real.sock 2>/dev/null; "
          .. "ln -sfn " .. sh_quote(target) .. " toolbox.sock; }; true")
        -- more calls at once than pooled connections, so new ones are made
        local results = require("daytona").all((function()
          local fns = {}
          for i = 1, 8 do fns[i] = function() return exec(a.id, "hostname") end end
          return fns
        end)())
        for _, r in ipairs(results) do assert.are.equal(run .. "\n", r) end
        -- an upload meant for A lands in A
        local st = call("POST", "/files/upload?path=/tmp/meant-for-a",
          "--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nA\r\n--x--\r\n",
          { base = srv.toolbox_url .. "/" .. a.id,
            headers = { ["Content-Type"] = "multipart/form-data; boundary=x" } })
        assert.are.equal(200, st)
        assert.are.equal("A", exec(a.id, "cat /tmp/meant-for-a"))
        assert.are.equal("none", exec(b.id, "cat /tmp/meant-for-a 2>/dev/null || echo -n none"))
      end
      ok(200, "DELETE", "/sandbox/" .. a.id)
      ok(200, "DELETE", "/sandbox/" .. b.id)
    end)
  end)

  it("keeps each daemon's socket where only dtlocal can write", function()
    helper.run(function()
      local s = create()
      local path = assert(socket_of(s.id), "no socket for " .. s.id)
      local dir = core.util.stat(path:match("^(.*)/[^/]+$"))
      assert.are.equal("directory", dir.type)
      assert.are.equal(core.util.getuid(), dir.uid)
      assert.are.equal(0, dir.mode & 0x3f)          -- 0700: nobody else's
      -- and nothing inside the sandbox is on the host's way to it
      assert.is_nil(path:find(srv.state_dir, 1, true))
      assert.are.equal("no socket", exec(s.id, "ls /run/dtlua/*.sock >/dev/null 2>&1 || echo -n no socket"))
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("shows a sandbox its own cgroups only, and none of the host's state or secrets", function()
    helper.run(function()
      -- secrets of the host's, made for this spec: a file only root may
      -- read under /etc and a service's state dir under /var/lib
      local tag = core.util.hex(core.util.random_bytes(6))
      local etc_secret, var_state = "/etc/dtlua-spec-" .. tag, "/var/lib/dtlua-spec-" .. tag
      assert(os.execute("umask 077 && echo etc-secret > " .. etc_secret
        .. " && mkdir -m 0755 " .. var_state .. " && echo var-state > " .. var_state .. "/data"))
      local ok_, err = pcall(function()
        -- started after the secrets exist (not a warm one: the host's
        -- files are seen as they are when a sandbox starts)
        local s = create{ networkBlockAll = true }
        -- every group of the machine was listed, other sandboxes' ids and
        -- dtlocal's own among them
        assert.are.equal("", exec(s.id, "find /sys/fs/cgroup -maxdepth 4 -name 'dtlocal-*' 2>/dev/null"))
        assert.are.equal("", exec(s.id, "find /sys/fs/cgroup -maxdepth 4 -name '" .. s.id .. "' 2>/dev/null"))
        -- its own limits stay readable (runtimes size themselves by them)
        local mem = exec(s.id, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null | head -1")
        if mem ~= "" then assert.are.equal(tostring(1024 * 1024 * 1024), mem:gsub("%s+$", "")) end
        -- with sudo (the sandbox's root owns the host's root files through
        -- the idmapped layers): still nothing
        for _, path in ipairs({ etc_secret, var_state .. "/data", "/var/lib/dtlua/uid-slots", "/etc/security/opasswd" }) do
          assert.are.equal("hidden", exec(s.id, "sudo cat " .. path .. " >/dev/null 2>&1 || echo -n hidden"), path)
        end
        assert.are.equal("", exec(s.id, "sudo find /var/lib/dtlua " .. var_state .. " -mindepth 1 2>/dev/null"))
        -- the sandbox's own sudoers, and sudo and the package database work
        assert.is_nil(exec(s.id, "sudo cat /etc/sudoers"):find("%sudo", 1, true))
        assert.are.equal("root\n", exec(s.id, "sudo -n whoami"))
        assert.matches("ii%s+bash", exec(s.id, "dpkg -l bash | tail -1"))
        ok(200, "DELETE", "/sandbox/" .. s.id)
      end)
      os.execute("rm -rf " .. etc_secret .. " " .. var_state)
      if not ok_ then error(err, 0) end
    end)
  end)

  it("never follows a link a sandbox left in a volume to a volume subpath", function()
    helper.run(function()
      -- a directory of the host's, root's alone, that a link could name
      local secret = helper.tmpdir()
      assert(os.execute("chmod 0700 " .. secret .. " && echo host-secret > " .. secret .. "/marker"))
      local vol = ok(200, "POST", "/volumes", { name = "spec-sec-vol" })
      local a = create{ volumes = { { volumeId = vol.id, mountPath = "/home/daytona/vol" } } }
      exec(a.id, "ln -s " .. sh_quote(secret) .. " /home/daytona/vol/evil && "
        .. "mkdir -p /home/daytona/vol/deep && ln -s " .. sh_quote(secret) .. " /home/daytona/vol/deep/er")
      for _, sub in ipairs({ "evil", "deep/er", "deep/er/x" }) do
        local st, body = call("POST", "/sandbox", { volumes = { { volumeId = vol.id, mountPath = "/v", subpath = sub } } })
        local id = type(body) == "table" and body.id
        if st == 200 and id then
          -- the start fails (the launcher refuses the link) or, if it ever
          -- starts, the host's directory is not what it sees
          helper.eventually(function()
            local r = ok(200, "GET", "/sandbox/" .. id)
            return r.state == "error" or r.state == "started"
          end, 30)
          local r = ok(200, "GET", "/sandbox/" .. id)
          if r.state == "started" then
            assert.are.equal("unseen", exec(id, "cat /v/marker 2>/dev/null || echo -n unseen"))
          else
            assert.matches("symlink", r.errorReason or "")
          end
          call("DELETE", "/sandbox/" .. id)
        end
        -- the host's directory kept its mode, and no sandbox uid got it
        local info = core.util.stat(secret)
        assert.are.equal(0, info.mode & 0x3f, "mode of the host dir changed through subpath " .. sub)
        assert.are.equal(core.util.getuid(), info.uid)
      end
      ok(200, "DELETE", "/sandbox/" .. a.id)
      helper.eventually(function() return (call("DELETE", "/volumes/" .. vol.id)) == 200 end, 15)
    end)
  end)
end)

describe("dtlocal previews under attack", function()
  local http = require "daytona.runtime.http"
  local server = require "daytona.runtime.server"

  setup(function() srv = dtlocal.start() end)
  teardown(function() if srv then srv.stop() end end)

  -- A server in sandbox `id` on `port` that answers with what it was sent.
  local ECHO = [[
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (self.path + "\n" + str(self.headers)).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
]]
  local function echo_server(id, port)
    local tb = srv.toolbox_url .. "/" .. id
    exec(id, "cat > /tmp/echo.py <<'EOF'\n" .. ECHO .. "EOF")
    assert.are.equal(201, (call("POST", "/process/session", { sessionId = "echo" }, { base = tb })))
    call("POST", "/process/session/echo/exec", { command = "python3 /tmp/echo.py " .. port, runAsync = true }, { base = tb })
  end

  local function free_port()
    local s <close> = server.listen{ port = 0, handler = function() end }
    return s.port
  end

  it("never hands the preview token to the sandbox, however its name is spelled", function()
    helper.run(function()
      local s = create()
      local port = free_port()
      echo_server(s.id, port)
      local p = ok(200, "GET", "/sandbox/" .. s.id .. "/ports/" .. port .. "/preview-url")
      local tok = p.token
      helper.eventually(function()
        return http.request{ url = p.url .. "/", headers = { ["X-Daytona-Preview-Token"] = tok } }.status == 200
      end, 15, 0.05)
      for _, name in ipairs({ "DAYTONA_SANDBOX_AUTH_KEY", "DAYTONA%5FSANDBOX%5FAUTH%5FKEY", "%44AYTONA_SANDBOX_AUTH_KEY" }) do
        local r = http.request{ url = p.url .. "/page?a=1&" .. name .. "=" .. tok .. "&b=2",
          headers = { Referer = p.url .. "/index?" .. name .. "=" .. tok .. "&keep=1" } }
        assert.are.equal(200, r.status, name)
        assert.is_nil(r.body:find(tok, 1, true), "the token reached the sandbox as " .. name .. ":\n" .. r.body)
        assert.matches("/page%?a=1&b=2", r.body)
        assert.matches("keep=1", r.body)
      end
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("keeps previews off the API's origin", function()
    helper.run(function()
      local s = create()
      local p = ok(200, "GET", "/sandbox/" .. s.id .. "/ports/3000/preview-url")
      assert.are_not.equal(p.url:match("^(http://[^/]+)"), srv.base_url)
      local st, body = call("GET", "/preview/" .. s.id .. "/3000/", nil, { base = srv.base_url })
      assert.are.equal(404, st)
      assert.matches("own origin", body.message)
      ok(200, "DELETE", "/sandbox/" .. s.id)
    end)
  end)

  it("reaches a public sandbox's own ports only, not the host's or another sandbox's", function()
    helper.run(function()
      local a, b = create(), create()
      ok(201, "POST", "/sandbox/" .. a.id .. "/public/true")
      local pa, pb = free_port(), free_port()
      echo_server(a.id, pa)
      echo_server(b.id, pb)
      -- a server of the host's on loopback
      local host_srv <close> = server.listen{ port = 0, handler = function(_, res) res:send(200, {}, "host secret") end }
      local base = ok(200, "GET", "/sandbox/" .. a.id .. "/ports/" .. pa .. "/preview-url").url:match("^(http://[^/]+)")
      local function get(port, host)
        return http.request{ url = base .. "/preview/" .. a.id .. "/" .. port .. "/", timeout = 10,
                             headers = host and { Host = host } or nil }
      end
      helper.eventually(function() return get(pa).status == 200 end, 15, 0.05)
      -- by Host name as a browser would, an origin per sandbox port
      local pp = base:match(":(%d+)$")
      local r = http.request{ url = "http://" .. pa .. "-" .. a.id .. ".localhost:" .. pp .. "/x" }
      assert.are.equal(200, r.status)
      assert.matches("^/x\n", r.body)
      helper.eventually(function()
        return exec(b.id, "python3 -c 'import socket;socket.create_connection((\"127.0.0.1\"," .. pb .. "))' && echo -n up") == "up"
      end, 15, 0.1)
      local srv_port = srv.base_url:match(":(%d+)$")
      for _, port in ipairs({ host_srv.port, pb, tonumber(srv_port), tonumber(pp) }) do
        local r2 = get(port)
        assert.are.equal(502, r2.status, "port " .. port .. " answered " .. r2.status .. ": " .. tostring(r2.body))
        assert.is_nil(r2.body:find("host secret", 1, true))
      end
      ok(200, "DELETE", "/sandbox/" .. a.id)
      ok(200, "DELETE", "/sandbox/" .. b.id)
    end)
  end)
end)
