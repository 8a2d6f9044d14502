--- dtlocal.toolbox.exec: one-shot execution (doc/protocol.md §4.3).
--
-- POST /process/execute: the command text is fed on stdin to a fresh
-- non-interactive shell in its own process group, stdout and stderr merged
-- into `result`. POST /process/code-run: the code runs under the runtime
-- of its language (python3, node, tsx, or the shell).
--
-- Timeouts (`timeout` seconds, 0/absent = none) kill the whole process
-- group and answer 408 with code PROCESS_EXECUTION_TIMEOUT. A runtime that
-- is not installed is a 400 naming it, never a fake result.
local core = require "daytona.core"
local http = require "dtlocal.http"
local common = require "dtlocal.toolbox.common"
local proc = require "dtlocal.toolbox.proc"

local raise = http.raise
local json = http.json
local util = core.util
local ipairs, pairs, tostring, os, io, pcall, error = ipairs, pairs, tostring, os, io, pcall, error
local type, next = type, next

local M = {}

local function check_cwd(app, cwd)
  if cwd == nil or cwd == "" then return app.workdir end
  local path = common.resolve(app, cwd, "cwd")
  local st = util.stat(path, true)
  if not st then raise(400, ("cwd: no such directory: %s"):format(path), "BAD_REQUEST") end
  if st.type ~= "directory" then raise(400, ("cwd: not a directory: %s"):format(path), "BAD_REQUEST") end
  return path
end

local function reply(ctx, r, extra)
  local result = r.output
  if r.truncated then result = result .. "\n[output truncated by the toolbox: over 64 MiB]\n" end
  local body = { exitCode = r.exit_code, result = result }
  if extra then for k, v in pairs(extra) do body[k] = v end end
  return 200, body
end

function M.execute(ctx)
  local app = ctx.app
  local body = ctx:json_object(true)
  local command = common.str(body, "command", true)
  if not command:find("%S") then
    raise(400, "invalid request body: field 'command' must not be blank", "INVALID_REQUEST_BODY")
  end
  local cwd = check_cwd(app, common.str(body, "cwd"))
  local envs = common.env_map(body, "envs")
  local timeout = common.int(body, "timeout", 0, 2 ^ 31)
  local r, msg = proc.run({ app.shell }, { cwd = cwd, env = common.child_env(app, envs),
                                           input = command .. "\n", timeout = timeout })
  if not r then
    -- the protocol's spawn failure: 200 with exit code -1 and the reason
    return 200, { exitCode = -1, result = tostring(msg) }
  end
  return reply(ctx, r)
end

-- language -> how to run it: program, its arguments before the user's argv,
-- whether the code goes on stdin (else to a temp file named by `ext`)
local runtimes = {
  python = { program = "python3", args = { "-u", "-" } },
  javascript = { program = "node", args = { "-" }, prefix = "process.argv.splice(1, 1);\n" },
  -- tsx (`make deps` installs it globally) transpiles without type checking, as
  -- upstream's `ts-node -T` does, and runs a .ts file as CommonJS like its
  -- `-O {"module":"CommonJS"}`. It cannot take TypeScript on stdin (`tsx -`
  -- is plain node), hence the temp file. The preload drops the file's path
  -- from process.argv before the program starts, so argv is [node, ...argv]
  -- as under JavaScript's entry, without shifting the program's line numbers
  -- the way a prepended line would. --no-cache: every file is new, so a
  -- cache would only pile up in the sandbox's /tmp.
  typescript = { program = "tsx", ext = ".ts",
                 args = { "--no-cache", "--import", "data:text/javascript,process.argv.splice(1,1)" } },
  shell = { program = "SHELL", args = { "-s", "--" } },
}
runtimes.bash = runtimes.shell
runtimes.sh = runtimes.shell
M.runtimes = runtimes

---------------------------------------------------------------------------
-- Charts (doc/protocol.md §4.3): Python runs with matplotlib's backend set to
-- python/dtlua_charts.py beside this file, which turns each figure that
-- plt.show() shows into an artifact line; those lines leave `result` and
-- come back as `artifacts.charts`.
---------------------------------------------------------------------------

local ARTIFACT = "dtn_artifact_k39fd2:"

-- The hook's directory, absolute: the code runs in the sandbox's work
-- directory, not ours. In a sandbox it is the dtlua installation, bind-mounted
-- at the same path (doc/dtlocal.md). nil when the file is not there (an
-- installation without it): Python then runs as it would anyway.
local CHARTS_DIR = common.python_path("dtlua_charts.py")
CHARTS_DIR = CHARTS_DIR and CHARTS_DIR:match("^(.*)/[^/]*$")
M.charts_dir = CHARTS_DIR

-- Point matplotlib at the hook, unless the caller or the sandbox chose a
-- backend of their own (theirs wins: no charts then, as they asked).
local function chart_hook(env)
  if not CHARTS_DIR then return end
  if (env.MPLBACKEND or "") == "" then env.MPLBACKEND = "module://dtlua_charts" end
  local path = env.PYTHONPATH
  env.PYTHONPATH = (path and path ~= "") and (CHARTS_DIR .. ":" .. path) or CHARTS_DIR
end

-- A chart's JSON has no object that may be empty, so every empty table
-- decoded from it was an array (`elements`, `outliers`, ticks): mark them so,
-- or they would go out as {}.
local function arrays_kept(v)
  if type(v) ~= "table" then return v end
  if next(v) == nil then return json.array(v) end
  for k, x in pairs(v) do v[k] = arrays_kept(x) end
  return v
end

-- output -> output without the artifact lines (each with its newline), and
-- the charts they carried. A line that is not a chart (bad JSON, cut short by
-- the output limit, another artifact type) is dropped all the same.
local function take_charts(output)
  local charts = json.array()
  if not output:find(ARTIFACT, 1, true) then return output, charts end
  local kept, pos, n = {}, 1, #output
  while pos <= n do
    local nl = output:find("\n", pos, true)
    local stop = nl or n
    if output:sub(pos, pos + #ARTIFACT - 1) == ARTIFACT then
      local v = json.decode(output:sub(pos + #ARTIFACT, nl and nl - 1 or n))
      if type(v) == "table" and v.type == "chart" and type(v.value) == "table" then
        charts[#charts + 1] = arrays_kept(v.value)
      end
    else
      kept[#kept + 1] = output:sub(pos, stop)
    end
    pos = stop + 1
  end
  return table.concat(kept), charts
end
M.take_charts = take_charts

function M.code_run(ctx)
  local app = ctx.app
  local body = ctx:json_object(true)
  local code = common.str(body, "code", true)
  local language = common.str(body, "language", true)
  local rt = runtimes[language]
  if not rt then
    raise(400, ("invalid request body: field 'language' must be one of python, javascript, typescript, shell (got %q)")
      :format(language), "INVALID_REQUEST_BODY")
  end
  local argv_extra = common.str_list(body, "argv") or {}
  local envs = common.env_map(body, "envs")
  local timeout = common.int(body, "timeout", 0, 2 ^ 31)
  local env = common.child_env(app, envs)
  if language == "python" then chart_hook(env) end
  local program = rt.program == "SHELL" and app.shell or rt.program
  if not proc.which(program, env.PATH) then
    raise(400, ("%s is not installed in this sandbox (needed to run %s code)"):format(program, language),
          "RUNTIME_NOT_FOUND")
  end
  local argv = { program }
  for _, a in ipairs(rt.args) do argv[#argv + 1] = a end
  local input, tmp
  if rt.ext then
    tmp = ("%s/dtn_%s%s"):format(app.tmpdir, util.hex(util.random_bytes(8)), rt.ext)
    local f, err = io.open(tmp, "wb")
    if not f then raise(500, "cannot write the code to a temp file: " .. tostring(err)) end
    f:write(code)
    f:close()
    argv[#argv + 1] = tmp
  else
    input = (rt.prefix or "") .. code
  end
  for _, a in ipairs(argv_extra) do argv[#argv + 1] = a end
  local ok, r, msg = pcall(proc.run, argv, { cwd = app.workdir, env = env, input = input or "",
                                             timeout = timeout })
  if tmp then os.remove(tmp) end
  if not ok then error(r, 0) end
  if not r then return 200, { exitCode = -1, result = tostring(msg) } end
  local charts
  r.output, charts = take_charts(r.output)
  return reply(ctx, r, { artifacts = { charts = charts } })
end

return M
