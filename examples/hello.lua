-- examples/hello.lua: a sandbox from creation to deletion.
--
--     build/bin/dtlua examples/hello.lua
--
-- Creates a sandbox, runs a shell command in it, uploads a file from a Lua
-- string and one from a local path, downloads them back (into memory and
-- to a local path), runs a Python snippet with code_run, and deletes the
-- sandbox.
--
-- With DAYTONA_API_KEY set this runs on Daytona's cloud; with no
-- credentials the SDK uses the local server (dtlocal), starting it when
-- none runs. Under dtlua the script is a task: every call reads as
-- blocking while the event loop runs underneath.
local daytona = require "daytona"

local client = daytona.new()

-- `<close>` deletes the sandbox when this scope ends, by an error too
local sb <close> = client:create{ language = "python", labels = { example = "hello" } }
print(("created sandbox %s (%s)"):format(sb.id, sb.state))

-- A shell command: the exit code, and stdout and stderr merged in `result`.
local r = sb.process:exec("echo hello from $(hostname) as $(whoami)")
print(("exec: exit %d: %s"):format(r.exit_code, (r.result:gsub("%s+$", ""))))

-- Upload from a Lua string. Relative paths are under the sandbox's work
-- directory; missing parent directories are created.
sb.fs:upload_file({ data = "print(6 * 7)\n" }, "hello/main.py")
print("uploaded hello/main.py from a string")

-- Upload a local file (streamed from disk, whatever its size).
local notes = os.tmpname()
local f = assert(io.open(notes, "w"))
f:write("line one\nline two\n")
f:close()
sb.fs:upload_file(notes, "hello/notes.txt")
print("uploaded " .. notes .. " as hello/notes.txt")

r = sb.process:exec("python3 main.py && wc -l notes.txt", { cwd = sb:get_work_dir() .. "/hello" })
print(("exec in hello/: exit %d: %s"):format(r.exit_code, (r.result:gsub("%s+$", ""):gsub("\n", " | "))))

-- Download into memory...
local code = sb.fs:download_file("hello/main.py")
print(("downloaded hello/main.py: %d bytes: %s"):format(#code, (code:gsub("%s+$", ""))))

-- ...or straight to a local file.
local back = os.tmpname()
sb.fs:download_file("hello/notes.txt", back)
f = assert(io.open(back))
local text = f:read("a")
f:close()
print(("downloaded hello/notes.txt to %s: %d bytes, same as sent: %s"):format(back, #text,
  tostring(text == "line one\nline two\n")))
os.remove(notes)
os.remove(back)

-- Code in the sandbox's language (python here), without writing a file.
r = sb.process:code_run([[
import platform, sys
print("python", platform.python_version(), "on", sys.platform)
print(sum(i * i for i in range(10)))
]])
print(("code_run: exit %d:\n%s"):format(r.exit_code, (r.result:gsub("%s+$", ""))))

print("deleting sandbox " .. sb.id)
-- (the `<close>` above deletes it here, as the chunk ends)
