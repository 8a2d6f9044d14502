-- The request paths dtlocal parses itself (multipart, query strings, JSON
-- bodies, Socket.IO frames, PTY and interpreter WebSocket messages),
-- fuzzed against a real private dtlocal and a sandbox (spec/support/fuzz.lua
-- says what is generated and what counts as a failure).
--
-- `make test` runs it bounded: a fixed seed, then one random seed (printed
-- when it fails), FUZZ_TEST_SECONDS each (default 4). `make fuzz` runs one
-- seed (FUZZ_SEED, else a random one) for FUZZ_SECONDS (default 300);
-- FUZZ_SEED=s FUZZ_INPUT=i replays a single input of a failure.
local core = require "daytona.core"
local helper = require "support.helper"
local dtlocal = require "support.dtlocal"
local fuzz = require "support.fuzz"
local http = require "daytona.runtime.http"
local websocket = require "daytona.runtime.websocket"

local FIXED_SEED = 20261207

local function random_seed()
  local b = core.util.random_bytes(4)
  return (b:byte(1) << 24 | b:byte(2) << 16 | b:byte(3) << 8 | b:byte(4)) & 0x7fffffff
end

describe("dtlocal fuzzing", function()
  local srv

  setup(function() srv = dtlocal.start() end)
  teardown(function()
    if srv then srv.stop() end
    helper.cleanup()
  end)

  -- Run `seconds` of seed `seed` (or one input) and fail listing what failed.
  local function campaign(seed, seconds, opts)
    opts = opts or {}
    helper.run(function()
      local f = fuzz.new{ srv = srv, seed = seed }
      f:setup()
      local ok, report = pcall(f.run, f, { seconds = seconds, only = opts.only, progress = opts.progress })
      f:teardown()
      if not ok then error(report, 0) end
      io.stderr:write(("\nfuzz: seed %d: %d inputs in %.1f s (%.0f/s), %d failures\n%s\n"):format(
        seed, report.inputs, report.seconds, report.rate, #report.failures, fuzz.stats_lines(report.stats)))
      if #report.failures > 0 then
        local lines = {}
        for _, x in ipairs(report.failures) do lines[#lines + 1] = x.line end
        error(table.concat(lines, "\n") .. "\n--- server log (tail) ---\n" .. srv.log():sub(-4000), 0)
      end
      assert.is_true(report.inputs > 0, "the fuzzer sent no input")
    end)
  end

  -- The inputs the fuzzer found, as they were sent, each against the fix
  -- that answers it properly now.
  describe("regressions", function()
    local fx, tb

    local function post(path, body)
      local r = http.request{ url = srv.base_url .. path, method = "POST", body = body, timeout = 30,
                              headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/json" } }
      return r.status, r.body
    end

    setup(function()
      helper.run(function()
        fx = fuzz.new{ srv = srv, seed = 0 }
        fx:setup()
        tb = "/toolbox/" .. fx.env.id
      end)
    end)
    teardown(function()
      if fx then helper.run(function() fx:teardown() end) end
    end)

    it("a PTY size that is a whole float without an integer (-inf, 1e300) is 400, not 500", function()
      helper.run(function()
        -- seed 1, input 1136: "rows":-inf (lua-cjson reads inf and nan)
        local st, body = post(tb .. "/process/pty",
          '{"cols":3,"cwd":"fuzz","env\11":{"A":"b"},"id":"fz-new","lazyStart":true,"rows":-inf}')
        assert.are.equal(400, st, body)
        assert.matches("rows must be an integer", body, 1, true)
        st, body = post(tb .. "/process/pty", '{"id":"fz-big","cols":1e300,"rows":24}')
        assert.are.equal(400, st, body)
        st, body = post(tb .. "/process/pty", '{"id":"fz-new2","lazyStart":true,"cols":80,"rows":30}')
        assert.are.equal(201, st, body)
        st, body = post(tb .. "/process/pty/fz-new2/resize", '{"cols":80,"rows":1e400}')
        assert.are.equal(400, st, body)
      end)
    end)

    it("create-connect refuses cols past an integer's range instead of taking the default", function()
      helper.run(function()
        local ok, err, _, refused = websocket.connect(srv.base_url:gsub("^http", "ws") .. tb
          .. "/process/pty/create-connect?id=fz-cc&cols=99999999999999999999&rows=24",
          { headers = { Authorization = "Bearer " .. srv.token } })
        assert.is_nil(ok)
        assert.are.equal(400, refused.status, tostring(err))
      end)
    end)

    it("an interpreter timeout of 1e19 s (or inf) runs the code instead of failing with 1011", function()
      helper.run(function()
        -- seed 2, input 338: the timer could not hold the wait
        for _, t in ipairs { "0,\"timeout\":1e+19", "inf", "1e308" } do
          local why = fx:run_ws{ kind = "ws", target = "interpreter", name = "interpreter",
            path = tb .. "/process/interpreter/execute",
            frames = { { kind = "text", data = '{"code":"print(2)","contextId":"' .. fx.env.context .. '","timeout":' .. t .. '}' } } }
          assert.is_nil(why, why)
        end
        local ws = websocket.connect(srv.base_url:gsub("^http", "ws") .. tb .. "/process/interpreter/execute",
          { headers = { Authorization = "Bearer " .. srv.token } })
        ws:send('{"code":"print(2)","timeout":nan}')
        local data = ws:receive(10)
        assert.is_nil(data)
        assert.are.equal(1008, ws.close_code)
      end)
    end)

    it("a NUL in an env value is 400, not a 500 from the spawn", function()
      helper.run(function()
        -- seed 3, input 1473: X-Daytona-Pty-Envs~ of {"TERM":1500,"TERM":"\u0000"}
        local ok, err, _, refused = websocket.connect(srv.base_url:gsub("^http", "ws") .. tb
          .. "/process/pty/create-connect?id=ccfz-cc&cols=80&rows=24&cwd=fuzz",
          { headers = { Authorization = "Bearer " .. srv.token },
            protocols = { "X-Daytona-Pty-Exit-Control", "X-Daytona-Pty-Envs~eyJURVJNIjoxNTAwLCJURVJNIjoiXHUwMDAwIn0" } })
        assert.is_nil(ok)
        assert.are.equal(400, refused.status, tostring(err))
        local st, body = post(tb .. "/process/pty", '{"id":"fz-nul","envs":{"A":"x\\u0000y"}}')
        assert.are.equal(400, st, body)
        st, body = post(tb .. "/process/execute", '{"command":"true","envs":{"A":"\\u0000"}}')
        assert.are.equal(400, st, body)
      end)
    end)

    it("git failures that the request caused are 4xx, not 500", function()
      helper.run(function()
        -- seed 1, input 1400: deleting the branch that is checked out
        fx:exec("cd fuzzrepo && git checkout -q -b fz-branch 2>/dev/null; true")
        local r = http.request{ url = srv.base_url .. tb .. "/git/branches", method = "DELETE", timeout = 30,
          headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/json" },
          body = '{"name":"fz-branch","path":"fuzzrepo","cols":[[-1,null,"1e9<9"],"file:///nonexistent"]}' }
        assert.are.equal(409, r.status, r.body)
        -- seed 1, input 1764 and seed 5, input 204: a URL scheme git has no transport for
        for _, url in ipairs { "fihe:///nonexistent", "file\\u00ff8x:///nonexistent" } do
          local st, body = post(tb .. "/git/clone", '{"url":"' .. url .. '","path":"fuzz/clone"}')
          assert.are.equal(400, st, body)
        end
        -- seed 12, input 1564: a file outside the repository
        local st, body = post(tb .. "/git/add", '{"path":"fuzzrepo","files":[".."]}')
        assert.are.equal(400, st, body)
        -- seed 31, input 3877: a 640 KB password (git's environment)
        st, body = post(tb .. "/git/clone", '{"password":"' .. ("p"):rep(640000)
          .. '","url":"file:///nonexistent","path":"fuzz/clone2","username":"u"}')
        assert.are.equal(400, st, body)
        -- seed 41, input 8568: a NUL in a branch name (lua-cjson keeps the last of two keys)
        st, body = post(tb .. "/git/branches", '{"name":"fz-branch","name":"\\u0000","path":"fuzzrepo"}')
        assert.are.equal(400, st, body)
        -- seed 42, input 21816: a branch name past the file system's limit
        -- (in a repository with a commit, as the fuzzer's had by then)
        fx:exec("cd fuzzrepo && git -c user.name=f -c user.email=f@f commit -q --allow-empty -m fz")
        st, body = post(tb .. "/git/branches", '{"name":"example.c' .. ("A"):rep(405) .. 'om","path":"fuzzrepo"}')
        assert.are.equal(400, st, body)
        -- seed 21, input 5072: an empty pathspec
        st, body = post(tb .. "/git/add", '{"path":"fuzzrepo","files":[""]}')
        assert.are.equal(400, st, body)
      end)
    end)

    it("files/find skips files whose read fails instead of answering 500", function()
      helper.run(function()
        -- seed 42, input 17872: a search of / reads /proc and /sys files
        -- (EINVAL from some); the rest of the query is as the fuzzer sent it
        local r = http.request{ url = srv.base_url .. tb
          .. "/files/find?path=/&pattern=file:///nonexistent&%04%0A'Co'Content-Disposition:%20forntent-Disposition:%20form-data;%20=",
          headers = { Authorization = "Bearer " .. srv.token }, timeout = 120 }
        assert.are.equal(200, r.status, r.body)
      end)
    end)

    it("a working directory the client made unreachable (chmod 644) is 403 for git and PTYs, not 500", function()
      helper.run(function()
        -- seed 12, input 4306 (files/permissions of fuzz/ to 644), then
        -- inputs 4616 and 4723
        fx:exec("mkdir -p fuzz/shut && chmod 644 fuzz/shut")
        local st, body = post(tb .. "/git/clone",
          '{"branch":"main","password":"p","path":"fuzz/shut/clone","url":"file:///nonexistent","username":null}')
        assert.are.equal(403, st, body)
        local ok, err, _, refused = websocket.connect(srv.base_url:gsub("^http", "ws") .. tb
          .. "/process/pty/create-connect?id=fz-cc&cols=80&rows&cwd=fuzz/shut",
          { headers = { Authorization = "Bearer " .. srv.token }, protocols = { "X-Daytona-Pty-Exit-Control" } })
        assert.is_nil(ok)
        assert.are.equal(403, refused.status, tostring(err))
        st, body = post(tb .. "/process/pty", '{"id":"fz-shut","cwd":"fuzz/shut"}')
        assert.are.equal(403, st, body)
        fx:exec("chmod 755 fuzz/shut")
      end)
    end)

    -- Found by the fuzzer in the core's HTTP server (libmicrohttpd's 64 KiB
    -- per-connection pool): a target with many arguments filled the pool
    -- and MHD neither answered nor closed; the server now answers 414 from
    -- the request line (csrc/server_request.c, target_too_big).
    it("answers a query of more than ~1000 arguments at once with 414", function()
      helper.run(function()
        local t0 = require("daytona.core").now()
        local r = http.request{ url = srv.base_url .. "/health?" .. ("&"):rep(1100), timeout = 5 }
        assert.are.equal(414, r.status)
        assert.is_true(require("daytona.core").now() - t0 < 2)
      end)
    end)
    -- A request line larger than the pool is answered 414 by libmicrohttpd
    -- itself, which then closed with the rest of the line unread, so the
    -- client often saw a reset instead; the server now drains such a
    -- connection before closing it (csrc/server.c, lingering close).
    it("a request target over 64 KiB gets its 414, not a connection reset", function()
      helper.run(function()
        for _ = 1, 5 do
          local r = http.request{ url = srv.api_url .. "/sandbox?x=" .. ("a"):rep(150000), timeout = 5,
                                  headers = { Authorization = "Bearer " .. srv.token } }
          assert.are.equal(414, r.status)
        end
      end)
    end)
  end)

  local long = tonumber(os.getenv("FUZZ_SECONDS") or "")
  local env_seed = tonumber(os.getenv("FUZZ_SEED") or "")
  local only = tonumber(os.getenv("FUZZ_INPUT") or "")

  if only then
    it("replays input " .. only .. " of seed " .. tostring(env_seed), function()
      campaign(assert(math.tointeger(env_seed), "FUZZ_INPUT needs FUZZ_SEED"), nil, { only = math.tointeger(only) })
    end)
  elseif long then
    local seed = math.tointeger(env_seed) or random_seed()
    it(("survives %g s of seed %d"):format(long, seed), function()
      io.stderr:write(("fuzz: seed %d for %g s\n"):format(seed, long))
      campaign(seed, long, { progress = 30 })
    end)
  else
    local secs = tonumber(os.getenv("FUZZ_TEST_SECONDS") or "") or 4
    it("survives the fixed seed " .. FIXED_SEED, function()
      campaign(FIXED_SEED, secs)
    end)
    local seed = math.tointeger(env_seed) or random_seed()
    it("survives a random seed (" .. seed .. ")", function()
      campaign(seed, secs)
    end)
  end
end)
