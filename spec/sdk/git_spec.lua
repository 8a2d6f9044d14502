-- sandbox.git against a private local server, with a bare repository made
-- inside the sandbox as the remote (no network needed).
local errors = require "daytona.errors"
local fixture = require "sdk.fixture"

describe("sandbox.git", function()
  local srv, client, sb, home

  setup(function()
    srv = fixture.server()
    client, sb = fixture.sandbox(srv)
    home = sb:get_user_home_dir()
    -- an origin with one commit on main
    local r = sb.process:exec(table.concat({
      "set -e",
      "git init -q --bare -b main origin.git",
      "git init -q -b main seed && cd seed",
      "git config user.email s@example.com && git config user.name Seed",
      "echo one > README && git add README && git commit -q -m init",
      "git push -q ../origin.git main",
    }, "\n"), { cwd = home })
    assert(r.exit_code == 0, r.result)
  end)

  teardown(function() fixture.release(srv, sb) end)

  it("clones, branches, commits, pushes and pulls", function()
    local origin = home .. "/origin.git"
    sb.git:clone(origin, "work", { branch = "main" })
    local st = sb.git:status("work")
    assert.are.equal("main", st.current_branch)
    assert.are.same({}, st.file_status)
    assert.are.same({ "main" }, sb.git:branches("work").branches)

    sb.git:create_branch("work", "feature")
    sb.git:checkout_branch("work", "feature")
    assert.are.equal("feature", sb.git:status("work").current_branch)
    sb.fs:upload_file({ data = "two\n" }, "work/NEW")
    st = sb.git:status("work")
    assert.are.equal(1, #st.file_status)
    assert.are.equal("NEW", st.file_status[1].name)
    sb.git:add("work", { "NEW" })
    local c = sb.git:commit("work", "add NEW", "Ann", "ann@example.com")
    assert.matches("^%x+$", c.sha)
    assert.is_true(errors.is(fixture.fails(sb.git.commit, sb.git, "work", "nothing", "Ann", "a@x"),
      errors.DaytonaError))
    local empty = sb.git:commit("work", "empty", "Ann", "ann@example.com", { allow_empty = true })
    assert.matches("^%x+$", empty.sha)
    local hist = sb.git:history("work")
    assert.are.equal(3, #hist)
    sb.git:push("work")

    sb.git:clone(origin, "other")
    sb.git:checkout_branch("other", "main")
    sb.git:pull("other")
    sb.git:delete_branch("work", "main")
    local names = sb.git:branches("work").branches
    assert.are.same({ "feature" }, names)
  end)

  it("clones a given commit", function()
    local sha = sb.process:exec("git -C origin.git rev-parse main", { cwd = home }).result:match("%x+")
    sb.git:clone(home .. "/origin.git", "at-commit", { commit_id = sha })
    local r = sb.process:exec("git -C at-commit rev-parse HEAD", { cwd = home })
    assert.are.equal(sha, r.result:match("%x+"))
  end)

  it("raises for a missing repository, branch or remote", function()
    assert.is_true(errors.is(fixture.fails(sb.git.status, sb.git, "/no/repo"), errors.DaytonaError))
    assert.is_true(errors.is(fixture.fails(sb.git.clone, sb.git, home .. "/nope.git", "x"), errors.DaytonaError))
    sb.git:clone(home .. "/origin.git", "w3")
    assert.is_true(errors.is(fixture.fails(sb.git.checkout_branch, sb.git, "w3", "no-branch"),
      errors.DaytonaError))
    assert.is_true(errors.is(fixture.fails(sb.git.create_branch, sb.git, "w3", "main"),
      errors.DaytonaConflictError))
  end)
end)
