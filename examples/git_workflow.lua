-- examples/git_workflow.lua: clone, branch, commit, push and pull with
-- sandbox.git, against a repository inside the sandbox (no network).
--
--     build/bin/dtlua examples/git_workflow.lua
--
-- Two clones of one bare repository play two developers: alice works on a
-- branch and pushes it; bob pulls it, adds a commit and pushes; alice
-- pulls bob's commit. For a hosted repository, pass its https URL to
-- clone and `{ username = , password = token }` to clone, push and pull.
local daytona = require "daytona"

local client = daytona.new()
local sb <close> = client:create{ labels = { example = "git-workflow" } }
print(("created sandbox %s"):format(sb.id))

local work = sb:get_work_dir()
local origin = work .. "/origin.git"
local alice, bob = work .. "/alice", work .. "/bob"

-- The "remote": a bare repository with a first commit on main, made with
-- git itself (the SDK works on clones; it has no init).
local r = sb.process:exec(table.concat({
  "set -e",
  "git init -q -b main seed",
  "cd seed && echo '# demo' > README.md && git add README.md",
  "git -c user.name=Seed -c user.email=seed@example.com commit -qm 'initial commit'",
  "git clone -q --bare . " .. origin,
  "cd .. && rm -rf seed",
}, "\n"), { cwd = work, timeout = 30 })
assert(r.exit_code == 0, r.result)
print("made the bare repository " .. origin)

sb.git:clone("file://" .. origin, alice)
sb.git:clone("file://" .. origin, bob)
print("cloned it twice: " .. alice .. ", " .. bob)

-- alice: a branch, a file, a commit, a push (which sets the upstream).
local branch = "feature/greeting"
sb.git:create_branch(alice, branch)
sb.git:checkout_branch(alice, branch)
sb.fs:upload_file({ data = 'print("hello")\n' }, alice .. "/greeting.py")
for _, file in ipairs(sb.git:status(alice).file_status) do
  print(("alice status: %s: %s"):format(file.name, file.worktree))     -- greeting.py: Untracked
end
sb.git:add(alice, { "greeting.py" })
local c = sb.git:commit(alice, "Add greeting.py", "Alice", "alice@example.com")
print(("alice committed %s on %s"):format(c.sha:sub(1, 10), branch))
sb.git:push(alice)
print("alice pushed " .. branch)

-- bob: pull (fetches the new branch), switch to it, extend it, push.
sb.git:pull(bob)
sb.git:checkout_branch(bob, branch)   -- creates a local branch tracking origin's
r = sb.process:exec("python3 greeting.py", { cwd = bob })
print("bob runs alice's greeting.py: " .. r.result:gsub("%s+$", ""))
sb.fs:upload_file({ data = 'print("hello")\nprint("and goodbye")\n' }, bob .. "/greeting.py")
sb.git:add(bob, { "." })
c = sb.git:commit(bob, "Say goodbye too", "Bob", "bob@example.com")
sb.git:push(bob)
print(("bob committed %s and pushed"):format(c.sha:sub(1, 10)))

-- alice: behind by one until she pulls.
sb.git:pull(alice)
r = sb.process:exec("python3 greeting.py", { cwd = alice })
print("alice pulled; greeting.py now prints: " .. r.result:gsub("%s+$", ""):gsub("\n", " / "))

-- Where everyone stands.
for _, who in ipairs{ { "alice", alice }, { "bob", bob } } do
  local st = sb.git:status(who[2])
  print(("%s: on %s, ahead %d, behind %d, published %s, %d changed file(s); branches: %s"):format(
    who[1], st.current_branch, st.ahead or 0, st.behind or 0, tostring(st.branch_published),
    #st.file_status, table.concat(sb.git:branches(who[2]).branches, ", ")))
end
print("history on " .. branch .. ":")
for _, commit in ipairs(sb.git:history(alice)) do
  print(("  %s %-6s %s"):format(commit.hash:sub(1, 10), commit.author, commit.message))
end
