-- examples/pty_session.lua: an interactive terminal (PTY) in a sandbox.
--
--     build/bin/dtlua examples/pty_session.lua
--
-- Creates a terminal, types commands into it and reads what it prints,
-- resizes it, and exits the shell with a status we read back. The first
-- terminal is read by pulling chunks (the handle is an iterator); the
-- second delivers its output to a callback while we wait.
local daytona = require "daytona"

local client = daytona.new()
local sb <close> = client:create{ labels = { example = "pty-session" } }
print(("created sandbox %s"):format(sb.id))

-- Terminal output is raw: colours, cursor moves, \r\n. Strip it for printing.
local function plain(s)
  return (s:gsub("\27%[[%d;?]*[%a]", ""):gsub("\27%][^\7]*\7", ""):gsub("\r", ""))
end

-- Read until the output matches pattern (10 s at most per chunk); returns
-- the captures.
local function read_until(pty, pattern)
  local seen = ""
  while true do
    local chunk = pty:read{ timeout = 10 }
    if chunk == nil then error("the terminal ended before printing " .. pattern .. ":\n" .. plain(seen)) end
    seen = seen .. chunk
    local found = { plain(seen):match(pattern) }
    if #found > 0 then return table.unpack(found) end
  end
end

-- Pull mode (no on_data): the handle is read with pty:read() or `for chunk in pty`.
local pty <close> = sb.process:create_pty_session("demo", { pty_size = { rows = 24, cols = 80 } })
print("created PTY session " .. pty.session_id)

-- The echo of what we type comes back too, so the marker printed by the
-- command ("size: 24 80") differs from the command line itself.
pty:send_input('echo "size: $(stty size)"\n')
print(("the shell sees %s rows, %s columns"):format(read_until(pty, "size: (%d+) (%d+)")))

pty:resize{ rows = 40, cols = 120 }
local info = sb.process:get_pty_session_info(pty.session_id)
print(("resized to %d x %d (session info: active %s)"):format(info.rows, info.cols, tostring(info.active)))
pty:send_input('echo "size: $(stty size)"\n')
print(("the shell now sees %s rows, %s columns"):format(read_until(pty, "size: (%d+) (%d+)")))

-- Ask for a line of input, as an interactive program would.
pty:send_input('read -p "your name? " name; echo "hello, $name!"\n')
read_until(pty, "your name%? ")
pty:send_input("Lua\n")
print("the shell answers: " .. read_until(pty, "(hello, %w+!)"))

-- Exit with a status; read what is left until the terminal ends.
pty:send_input("exit 7\n")
for _ in pty do end
print(("the shell exited with code %s"):format(tostring(pty.exit_code)))

-- Callback mode: on_data gets the output from a reader task while this
-- one sends input and then waits for the end.
local out = {}
local pty2 <close> = sb.process:create_pty_session("demo-callback", {
  on_data = function(bytes) out[#out + 1] = bytes end,
})
pty2:send_input("for i in 1 2 3; do echo line $i; done; exit 0\n")
local result = pty2:wait{ timeout = 30 }
local lines = {}
for n in plain(table.concat(out)):gmatch("\nline (%d)") do lines[#lines + 1] = n end
print(("second terminal: lines %s, exit code %s"):format(table.concat(lines, " "), tostring(result.exit_code)))
