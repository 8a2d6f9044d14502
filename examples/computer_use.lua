-- examples/computer_use.lua: a desktop in a sandbox, driven like a person
-- would drive it: open a terminal, click into it, type, look at the
-- screen, record it.
--
--     build/bin/dtlua examples/computer_use.lua [output directory]
--
-- `computer_use:start()` starts the sandbox's desktop (Xvfb, xfce4, x11vnc
-- and noVNC on port 6080) and `wait_until_ready` polls until all four run.
-- A terminal (xterm) is started on the sandbox's display in a session with
-- `run_async`; its window is found in `display:get_windows()` by its title.
-- The script clicks into it and types a command that renames the window
-- (an xterm title escape), and finds the window again under its new name:
-- proof that the keys reached the application. Meanwhile the screen is
-- recorded; the screenshot (screen.png) and the recording (recording.mp4)
-- are written to the output directory (default: the current directory).
-- The noVNC page to watch the desktop live is printed too.
local daytona = require "daytona"

local out_dir = arg and arg[1] or "."
local TITLE = "dtlua terminal"
local TYPED = "typed by dtlua"

local client = daytona.new()
local sb <close> = client:create{ labels = { example = "computer-use" } }
print(("created sandbox %s"):format(sb.id))
local cu = sb.computer_use

local started = cu:start()
print(("start: %s"):format(started.message))
local ready = cu:wait_until_ready{ timeout = 120 }
local names = {}
for _, name in ipairs({ "xvfb", "xfce4", "x11vnc", "novnc" }) do
  if ready[name] then names[#names + 1] = name end
end
print(("running: %s"):format(table.concat(names, ", ")))

local display = cu.display:get_info().displays[1]
print(("display: %dx%d"):format(display.width, display.height))

-- the desktop, live in a browser (noVNC through a signed preview link)
local link = sb:create_signed_preview_url(6080, { expires_in_seconds = 600 })
local path = link.url:match("^https?://[^/]+/(.*)$") or ""
print(("watch it: %s/vnc.html?autoconnect=true&path=%swebsockify"):format(link.url:gsub("/+$", ""),
  path ~= "" and (path:gsub("/*$", "/")) or ""))

-- Poll the window list until a window's title satisfies pred (a fixed
-- sleep would be too short on a slow machine and too long on a fast one).
local function find_window(pred, timeout)
  local deadline = os.time() + timeout
  repeat
    for _, w in ipairs(cu.display:get_windows().windows) do
      if pred(w.title or "") then return w end
    end
    daytona.sleep(0.2)
  until os.time() > deadline
  error("no such window after " .. timeout .. " s", 2)
end

local rec = cu.recording:start("example")
print(("recording %s (%s)"):format(rec.id, rec.status))

-- a terminal on the sandbox's display; it outlives the command that starts it
sb.process:create_session("desktop")
sb.process:execute_session_command("desktop", {
  -- `-e sh`: bash's prompt would set the title back at every prompt
  command = ("DISPLAY=:0 xterm -geometry 80x20+60+60 -title %q -e sh"):format(TITLE),
  run_async = true,
})
local win = find_window(function(t) return t == TITLE end, 30)
print(("window %q at %d,%d, %dx%d"):format(win.title, win.x, win.y, win.width, win.height))

-- click into it and type: the shell in it renames the window
cu.mouse:click(win.x + win.width // 2, win.y + win.height // 2)
cu.keyboard:type(("printf '\\033]0;%s\\007'"):format(TYPED))
cu.keyboard:press("enter")
local renamed = find_window(function(t) return t == TYPED end, 30)
print(("the window is now %q (id %s)"):format(renamed.title, tostring(renamed.id)))

-- look at the screen once it shows the new state, and save it
local shot = cu.screenshot:take_full_screen{ show_cursor = true }
local png = out_dir .. "/screen.png"
local bytes = shot:save(png)
local w, h = shot:dimensions()
print(("saved %s: %d bytes of %s, %dx%d"):format(png, bytes, shot:format(), w, h))
local small = cu.screenshot:take_compressed{ format = "jpeg", quality = 60, scale = 0.5 }
local sw, sh = small:dimensions()
print(("compressed: %s, %dx%d, %d bytes"):format(small:format(), sw, sh, #small:bytes()))

-- a few seconds more of video: the recording's length, not a wait for anything
cu.mouse:move(display.width // 2, display.height // 2)
daytona.sleep(2)
local done = cu.recording:stop(rec.id)
print(("recording %s: %s, %.1f s"):format(done.id, done.status, done.duration_seconds or 0))
local mp4 = out_dir .. "/recording.mp4"
local size = cu.recording:download(rec.id, mp4)
print(("downloaded %s: %d bytes"):format(mp4, size))
cu.recording:delete(rec.id)

cu:stop()
print(("stopped: %s"):format(cu:get_status().status))
print(("deleting sandbox %s"):format(sb.id))
