--- dtlocal.toolbox.recordings: screen recordings of the desktop
-- (/computeruse/recordings*, doc/protocol.md §4.9).
--
-- A recording is `ffmpeg -f x11grab` of display :0 into an MP4 (H.264,
-- yuv420p, 15 frames a second) in the recordings directory: the sandbox's
-- DAYTONA_RECORDINGS_DIR (relative to the home) or ~/.daytona/recordings,
-- as Daytona's. Stopping one sends ffmpeg `q` on its stdin, so it writes
-- the MP4's index and the file plays; SIGINT after 10 s, SIGKILL after 5 more
-- (the recording is then "failed"). The list is kept beside the files
-- (.dtlocal-recordings.json), so it outlives the daemon: after a sandbox's
-- stop and start its recordings are still listed, served and deletable.
--
-- Answers: start 201 Recording (503 without ffmpeg, naming the Debian
-- package, or without a running display; 400 for a bad label); stop 200
-- Recording (404 unknown id, 400 when not recording); list; get (404);
-- download streams the file from disk (400 while recording: the file is
-- not playable yet); delete 204 (400 while recording, 404 unknown).
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local process = require "daytona.runtime.process"
local http = require "dtlocal.http"
local common = require "dtlocal.toolbox.common"
local desktop = require "dtlocal.toolbox.desktop"
local proc = require "dtlocal.toolbox.proc"
local fs = require "dtlocal.fs"

local json = http.json
local raise = http.raise
local util = core.util
local sleep = scheduler.sleep
local ipairs, pairs, tostring, type, table, math, os, io, pcall =
  ipairs, pairs, tostring, type, table, math, os, io, pcall

local M = {}

local FRAMERATE = "15"
local STOP_GRACE = 10
local MAX_LABEL = 100

local INDEX = ".dtlocal-recordings.json"

local dir_of

-- The recordings' index beside them, so that they outlive the daemon (a
-- sandbox stopped and started again lists and serves them still): written
-- whole, through a rename.
local function save(s)
  local list = json.array()
  for _, rec in ipairs(s.order) do
    list[#list + 1] = { id = rec.id, fileName = rec.file_name, filePath = rec.path,
                        startTime = rec.start_time, started = rec.started, ended = rec.ended,
                        status = rec.status }
  end
  local path = s.dir .. "/" .. INDEX
  local tmp = path .. ".tmp"
  local f = io.open(tmp, "wb")
  if not f then return end
  local ok = f:write(json.encode(list))
  ok = f:close() and ok
  if ok then os.rename(tmp, path) else os.remove(tmp) end
end

-- What a previous daemon recorded here: one still "recording" then was cut
-- off with its ffmpeg (the sandbox stopped), so it is "failed"; one whose
-- file is gone is left out.
local function load(s)
  local text = fs.read_file(s.dir .. "/" .. INDEX)
  local list = text and json.decode(text)
  if type(list) ~= "table" then return end
  for _, e in ipairs(list) do
    if type(e) == "table" and type(e.id) == "string" and type(e.filePath) == "string"
       and type(e.fileName) == "string" and type(e.started) == "number"
       and e.filePath == s.dir .. "/" .. e.fileName and util.stat(e.filePath) then
      local rec = { id = e.id, file_name = e.fileName, path = e.filePath, start_time = tostring(e.startTime),
                    started = e.started, ended = type(e.ended) == "number" and e.ended or nil,
                    status = e.status == "completed" and "completed" or "failed",
                    err_path = ("%s/computeruse/recording-%s.err"):format(s.app.state_dir, e.id) }
      rec.ended = rec.ended or rec.started
      s.by_id[rec.id] = rec
      s.order[#s.order + 1] = rec
    end
  end
end

local function state(app)
  local s = app.recordings
  if not s then
    s = { by_id = {}, order = {}, app = app, dir = dir_of(app) }
    app.recordings = s
    load(s)
  end
  return s
end

local function now()
  local t = util.time()
  local sec = math.floor(t)
  return t, common.rfc3339(sec, math.floor((t - sec) * 1e9))
end

function dir_of(app)
  local env = common.child_env(app)
  local d = env.DAYTONA_RECORDINGS_DIR
  if d and d ~= "" then
    if d:sub(1, 1) ~= "/" then d = app.home .. "/" .. d end
    return common.clean(d)
  end
  return app.home .. "/.daytona/recordings"
end

-- A recording's state, refreshed from its ffmpeg if that has ended.
local function refresh(rec)
  local p = rec.process
  if rec.status == "recording" and p then
    local code = p:status()
    if code ~= nil then
      rec.status = (code == 0 and not rec.killed) and "completed" or "failed"
      rec.ended = rec.ended or util.time()
      rec.process = nil
      p:close()
      if rec.s then save(rec.s) end
    end
  end
  return rec
end

local function wire(rec)
  refresh(rec)
  local t = {
    id = rec.id, fileName = rec.file_name, filePath = rec.path,
    startTime = rec.start_time, status = rec.status,
  }
  if rec.ended then
    local sec = math.floor(rec.ended)
    t.endTime = common.rfc3339(sec, math.floor((rec.ended - sec) * 1e9))
    t.durationSeconds = math.floor((rec.ended - rec.started) * 1000 + 0.5) / 1000
  else
    t.durationSeconds = math.floor((util.time() - rec.started) * 1000 + 0.5) / 1000
  end
  local st = util.stat(rec.path)
  if st then t.sizeBytes = st.size end
  return t
end

local function find(app, id)
  local rec = state(app).by_id[id]
  if not rec then raise(404, ("recording %s not found"):format(tostring(id)), "NOT_FOUND") end
  return rec
end

function M.start(ctx)
  local app = ctx.app
  local body = ctx:json_object(false)
  local label = common.str(body, "label")
  if label and label ~= "" then
    if #label > MAX_LABEL or not label:match("^[%w%._%- ]+$") then
      raise(400, ("invalid request body: field 'label' must be at most %d letters, digits, spaces, '.', '_' or '-'")
        :format(MAX_LABEL), "INVALID_REQUEST_BODY")
    end
  else
    label = nil
  end
  if not proc.which("ffmpeg", common.child_env(app).PATH) then
    raise(503, "ffmpeg is not installed: recordings need the Debian package ffmpeg (`make deps` installs it)",
          "SERVICE_UNAVAILABLE")
  end
  local d = desktop.get(app)
  if not d:is_running("xvfb") then
    raise(503, "the desktop is not running: POST /computeruse/start first", "SERVICE_UNAVAILABLE")
  end
  local s = state(app)
  local dir = s.dir
  local ok, msg = fs.mkdirs(dir, 493, 493)
  if not ok then raise(500, ("cannot create the recordings directory %s: %s"):format(dir, tostring(msg))) end
  local id = common.uuid()
  local started, start_time = now()
  local name = ("%s_%s_%s.mp4"):format((label or "recording"):gsub(" ", "_"),
                                       os.date("!%Y%m%d_%H%M%S", math.floor(started)), id:sub(1, 8))
  local path = dir .. "/" .. name
  local size = desktop.GEOMETRY:match("^(%d+x%d+)")
  local err_path = ("%s/computeruse/recording-%s.err"):format(app.state_dir, id)
  fs.mkdirs(app.state_dir .. "/computeruse", 448, 448)
  local env = d:env()
  env.DTLUA_REC_ERR = err_path
  local p, perr = process.spawn({ "/bin/sh", "-c", 'exec "$@" 2>>"$DTLUA_REC_ERR"', "sh",
    "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostats", "-f", "x11grab", "-draw_mouse", "1",
    "-framerate", FRAMERATE, "-video_size", size, "-i", desktop.DISPLAY,
    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
    "-y", path }, { env = env, cwd = app.home, stdin = "pipe", stdout = "null", stderr = "null" })
  if not p then raise(500, "cannot start ffmpeg: " .. tostring(perr)) end
  -- started: the file exists and ffmpeg still runs (it checks the display
  -- and the encoder before it creates the file)
  local deadline = core.now() + 10
  while p:status() == nil and not util.stat(path) and core.now() < deadline do sleep(0.05) end
  if p:status() ~= nil or not util.stat(path) then
    p:close()
    local why = fs.read_file(err_path) or ""
    os.remove(path)
    raise(500, "ffmpeg did not start recording: " .. why:sub(-600))
  end
  local rec = { id = id, file_name = name, path = path, start_time = start_time, started = started,
                status = "recording", process = p, err_path = err_path, s = s }
  s.by_id[id] = rec
  s.order[#s.order + 1] = rec
  save(s)
  return 201, wire(rec)
end

-- End a recording's ffmpeg gracefully (q, then SIGINT, then SIGKILL).
local function finish(rec)
  local p = rec.process
  if not p or rec.status ~= "recording" then return end
  p:write("q")
  p:close_stdin()
  if not p:wait(STOP_GRACE) then
    p:kill("INT")
    if not p:wait(5) then
      rec.killed = true
      p:kill("KILL")
      p:wait(5)
    end
  end
  rec.ended = util.time()
  refresh(rec)
end

function M.stop(ctx)
  local body = ctx:json_object(true)
  local id = common.str(body, "id", true)
  local rec = refresh(find(ctx.app, id))
  if rec.status ~= "recording" then
    raise(400, ("recording %s is not in progress (it is %s)"):format(id, rec.status), "BAD_REQUEST")
  end
  finish(rec)
  return 200, wire(rec)
end

function M.list(ctx)
  local out = json.array()
  for _, rec in ipairs(state(ctx.app).order) do out[#out + 1] = wire(rec) end
  return 200, { recordings = out }
end

function M.get(ctx)
  return 200, wire(find(ctx.app, ctx.params.id))
end

function M.download(ctx)
  local rec = refresh(find(ctx.app, ctx.params.id))
  if rec.status == "recording" then
    raise(400, ("recording %s is still in progress: stop it first"):format(rec.id), "BAD_REQUEST")
  end
  local st = util.stat(rec.path)
  if not st or st.type ~= "file" then
    raise(404, ("the file of recording %s is gone (%s)"):format(rec.id, rec.path), "NOT_FOUND")
  end
  local ok, err = pcall(ctx.file, ctx, 200, {
    ["Content-Type"] = "application/octet-stream",
    ["Content-Disposition"] = ('attachment; filename="%s"'):format(rec.file_name),
  }, rec.path)
  if not ok then
    raise(404, ("the file of recording %s cannot be read: %s"):format(rec.id, tostring(err)), "NOT_FOUND")
  end
end

function M.delete(ctx)
  local app = ctx.app
  local rec = refresh(find(app, ctx.params.id))
  if rec.status == "recording" then
    raise(400, ("recording %s is still in progress: stop it before deleting it"):format(rec.id), "BAD_REQUEST")
  end
  os.remove(rec.path)
  os.remove(rec.err_path)
  local s = state(app)
  s.by_id[rec.id] = nil
  for i, r in ipairs(s.order) do
    if r == rec then table.remove(s.order, i); break end
  end
  save(s)
  return 204
end

--- Stop every recording in progress (the desktop is stopping).
function M.stop_all(app)
  local s = app.recordings
  if not s then return end
  for _, rec in pairs(s.by_id) do pcall(finish, rec) end
end

function M.shutdown(app)
  M.stop_all(app)
end

return M
