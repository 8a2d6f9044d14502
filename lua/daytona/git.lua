--- `sandbox.git`: git operations on repositories inside the sandbox.
--
--     sb.git:clone("https://github.com/user/repo.git", "repo", { branch = "main" })
--     sb.git:create_branch("repo", "feature")
--     sb.git:checkout_branch("repo", "feature")
--     sb.git:add("repo", { "." })
--     local c = sb.git:commit("repo", "change", "Ann", "ann@example.com")
--     sb.git:push("repo", { username = "ann", password = token })
--
-- `path` is the repository directory in the sandbox (relative paths are
-- resolved against the work directory). Errors: authentication failures
-- raise DaytonaAuthenticationError, a missing repository or branch
-- DaytonaNotFoundError, conflicts (non-fast-forward, existing branch)
-- DaytonaConflictError.
local check = require "daytona.check"
local wire = require "daytona.wire"

local setmetatable, ipairs = setmetatable, ipairs

local M = {}

local Git = {}
Git.__index = Git
Git.__name = "daytona.git.Git"
M.Git = Git

--- The git object of a sandbox (made by the Sandbox).
-- @param sb Sandbox
-- @return Git
function M.new(sb)
  return setmetatable({ _sb = sb }, Git)
end

local function call_toolbox(self, opts)
  return self._sb:toolbox(opts)
end

local CRED = check.set("username", "password")

local function creds(opts, f)
  opts = check.options(opts, f, CRED)
  local u = check.optstring(opts.username, f, "username")
  local p = check.optstring(opts.password, f, "password", true)
  return u, p
end

--- Clone a repository.
-- @param url string
-- @param path destination directory in the sandbox
-- @param opts optional `{ branch = , commit_id = , username = , password = ,
--   insecure_skip_tls = false }`
-- @return nothing
-- @raise DaytonaAuthenticationError, DaytonaNotFoundError, DaytonaError
function Git:clone(url, path, opts)
  local f = "clone"
  url = check.string(url, f, "url")
  path = check.string(path, f, "path")
  opts = check.options(opts, f, check.set("branch", "commit_id", "username", "password", "insecure_skip_tls"))
  call_toolbox(self, { method = "POST", path = "/git/clone", what = "git clone", json = {
    url = url, path = path,
    branch = check.optstring(opts.branch, f, "branch"),
    commit_id = check.optstring(opts.commit_id, f, "commit_id"),
    username = check.optstring(opts.username, f, "username"),
    password = check.optstring(opts.password, f, "password", true),
    insecure_skip_tls = check.optboolean(opts.insecure_skip_tls, f, "insecure_skip_tls"),
  } })
end

--- The repository's status.
-- @param path repository directory
-- @return `{ current_branch, ahead, behind, branch_published, file_status =
--   { { name, staging, worktree, extra }, ... } }`
-- @raise DaytonaNotFoundError if there is no repository
function Git:status(path)
  path = check.string(path, "status", "path")
  local r = wire.to_lua(call_toolbox(self, { method = "GET", path = "/git/status", query = { path = path },
    what = "git status" }) or {})
  r.file_status = r.file_status or {}
  return r
end

--- The repository's branches.
-- @param path repository directory
-- @return `{ branches = { "main", ... } }`
function Git:branches(path)
  path = check.string(path, "branches", "path")
  local r = wire.to_lua(call_toolbox(self, { method = "GET", path = "/git/branches", query = { path = path },
    what = "git branches" }) or {})
  r.branches = r.branches or {}
  return r
end

--- Create a branch (without checking it out).
-- @param path repository directory
-- @param name branch name
-- @return nothing
-- @raise DaytonaConflictError if it exists
function Git:create_branch(path, name)
  path = check.string(path, "create_branch", "path")
  name = check.string(name, "create_branch", "name")
  call_toolbox(self, { method = "POST", path = "/git/branches", json = { path = path, name = name },
    what = "git create branch" })
end

--- Delete a branch.
-- @param path repository directory
-- @param name branch name
-- @return nothing
-- @raise DaytonaNotFoundError
function Git:delete_branch(path, name)
  path = check.string(path, "delete_branch", "path")
  name = check.string(name, "delete_branch", "name")
  -- DELETE with a JSON body (doc/protocol.md §4.7)
  call_toolbox(self, { method = "DELETE", path = "/git/branches", json = { path = path, name = name },
    what = "git delete branch" })
end

--- Check out a branch.
-- @param path repository directory
-- @param branch branch name
-- @return nothing
-- @raise DaytonaNotFoundError; DaytonaConflictError for a dirty worktree
function Git:checkout_branch(path, branch)
  path = check.string(path, "checkout_branch", "path")
  branch = check.string(branch, "checkout_branch", "branch")
  call_toolbox(self, { method = "POST", path = "/git/checkout", json = { path = path, branch = branch },
    idempotent = true, what = "git checkout" })
end

--- Stage files.
-- @param path repository directory
-- @param files list of paths relative to the repository (or one string)
-- @return nothing
function Git:add(path, files)
  path = check.string(path, "add", "path")
  files = check.strlist(files, "add", "files")
  call_toolbox(self, { method = "POST", path = "/git/add", json = { path = path, files = files },
    idempotent = true, what = "git add" })
end

--- Commit the staged changes.
-- @param path repository directory
-- @param message commit message
-- @param author author name
-- @param email author email
-- @param opts optional `{ allow_empty = false }`
-- @return `{ sha = "..." }`
function Git:commit(path, message, author, email, opts)
  local f = "commit"
  path = check.string(path, f, "path")
  message = check.string(message, f, "message")
  author = check.string(author, f, "author")
  email = check.string(email, f, "email")
  opts = check.options(opts, f, check.set("allow_empty"))
  local r = call_toolbox(self, { method = "POST", path = "/git/commit", what = "git commit", json = {
    path = path, message = message, author = author, email = email,
    allow_empty = check.optboolean(opts.allow_empty, f, "allow_empty"),
  } }) or {}
  return { sha = r.hash or r.sha }
end

--- Push the current branch.
-- @param path repository directory
-- @param opts optional `{ username = , password = }`
-- @return nothing
-- @raise DaytonaAuthenticationError; DaytonaConflictError (non-fast-forward)
function Git:push(path, opts)
  path = check.string(path, "push", "path")
  local u, p = creds(opts, "push")
  call_toolbox(self, { method = "POST", path = "/git/push", json = { path = path, username = u, password = p },
    what = "git push" })
end

--- Pull into the current branch.
-- @param path repository directory
-- @param opts optional `{ username = , password = }`
-- @return nothing
-- @raise DaytonaAuthenticationError; DaytonaConflictError
function Git:pull(path, opts)
  path = check.string(path, "pull", "path")
  local u, p = creds(opts, "pull")
  call_toolbox(self, { method = "POST", path = "/git/pull", json = { path = path, username = u, password = p },
    what = "git pull" })
end

--- The commit history (the toolbox's `GET /git/history`, which no official
-- SDK wraps).
-- @param path repository directory
-- @return list of `{ hash, author, email, message, timestamp }`
function Git:history(path)
  path = check.string(path, "history", "path")
  local r = wire.to_lua(call_toolbox(self, { method = "GET", path = "/git/history", query = { path = path },
    what = "git history" }) or {})
  local out = {}
  for i, c in ipairs(r) do out[i] = c end
  return out
end


-- a call with '.' instead of ':' says so
check.methods(Git, "git")

return M
