--- dtlocal.toolbox.git: /git/* over the git command line (doc/protocol.md §4.7).
--
-- Every call runs `git` non-interactively (no terminal prompt; credentials,
-- when given, reach git through GIT_ASKPASS reading them from the child's
-- environment, never from argv or the URL). git's failure text is mapped to
-- the protocol's statuses: authentication 401, authorization 403, missing
-- repository/branch/remote/reference 404, non-fast-forward, conflicts,
-- dirty worktree, already exists 409, anything else 500 — each carrying
-- git's own message.
local core = require "daytona.core"
local http = require "dtlocal.http"
local common = require "dtlocal.toolbox.common"
local fs = require "dtlocal.fs"
local proc = require "dtlocal.toolbox.proc"

local util = core.util
local json = http.json
local raise = http.raise
local ipairs, tostring, table, string, io, os, type, tonumber =
  ipairs, tostring, table, string, io, os, type, tonumber

local M = {}

local ASKPASS = [[#!/bin/sh
case "$1" in
  [Uu]sername*) printf '%s\n' "$DTLUA_GIT_USERNAME" ;;
  *) printf '%s\n' "$DTLUA_GIT_PASSWORD" ;;
esac
]]

-- The askpass helper script, written once per daemon into its state dir.
local function askpass(app)
  if app.git_askpass then return app.git_askpass end
  local path = app.state_dir .. "/git-askpass.sh"
  local f, err = io.open(path, "wb")
  if not f then raise(500, "cannot write the git credential helper: " .. tostring(err)) end
  f:write(ASKPASS)
  f:close()
  util.chmod(path, 448)   -- 0700
  app.git_askpass = path
  return path
end

-- What Daytona's daemon adds to its typed errors, so that the SDKs pick the
-- error class from the code (doc/protocol.md §6.3).
local DAEMON = { source = "DAYTONA_DAEMON" }

-- git's message (LC_ALL=C) -> status, code. The codes are the Daytona
-- daemon's (DaemonErrorCode of its toolbox API): the 0.218 SDKs map
-- `source: DAYTONA_DAEMON` + code to a typed error (GIT_TRANSPORT_FAILED
-- -> DaytonaGitTransportFailedError, a 502) — order matters, the first
-- match wins: an HTTP status the remote answered says more than "unable to
-- access", which every failed https transfer prints.
local GIT_RULES = {
  { 404, "NOT_FOUND", { "not a git repository" } },   -- the local directory, not a remote
  { 401, "GIT_AUTH_FAILED", { "permission denied %(publickey", "authentication failed",
    "could not read username", "could not read password",
    "invalid username or password", "terminal prompts disabled", "http basic: access denied",
    "returned error: 401" } },
  { 403, "FORBIDDEN", { "permission to .- denied", "returned error: 403", "permission denied" } },
  { 422, "GIT_REMOTE_REJECTED", { "%[remote rejected%]", "pre%-receive hook declined", "protected branch" } },
  { 409, "GIT_PUSH_REJECTED", { "non%-fast%-forward", "%[rejected%]", "fetch first", "failed to push some refs" } },
  { 404, "GIT_REPO_NOT_FOUND", { "repository .- not found", "repository .- does not exist",
    "does not appear to be a git repository", "returned error: 404", "no such remote" } },
  { 404, "GIT_BRANCH_NOT_FOUND", { "remote branch .- not found", "couldn't find remote ref",
    "did not match any", "invalid reference", "unknown revision", "branch .- not found",
    "not a valid branch name" } },
  { 409, "GIT_BRANCH_EXISTS", { "a branch named .- already exists" } },
  -- CONFLICT rather than GIT_DIRTY_WORKTREE / GIT_MERGE_CONFLICT: same
  -- status, and spec/dtlocal/toolbox_spec.lua pins the code
  { 409, "CONFLICT", { "already exists", "conflict", "would be overwritten", "unstaged changes",
    "uncommitted changes", "not fully merged", "divergent", "your local changes",
    "cannot delete branch .- checked out" } },
  { 502, "GIT_TRANSPORT_FAILED", { "could not resolve host", "could not resolve proxy", "failed to connect",
    "couldn't connect", "connection refused", "connection timed out", "operation timed out",
    "network is unreachable", "no route to host", "ssl certificate", "ssl connect", "openssl",
    "schannel", "gnutls", "tls connection", "certificate problem", "server certificate",
    "early eof", "the remote end hung up", "unable to access", "could not read from remote repository",
    "unable to look up", "proxy" } },
  { 404, "NOT_FOUND", { "not found", "does not exist", "no upstream" } },
  { 400, "BAD_REQUEST", { "nothing to commit", "please tell me who you are", "empty ident",
    -- a URL whose scheme git has no transport for: what the request asked
    "protocol .- is not supported", "remote%-.- is not a git command", "unable to find remote helper",
    -- a path of the request that leaves the repository, or is no pathspec;
    -- a name past the file system's limit
    "is outside repository", "is not a valid pathspec", "file name too long",
    -- an author name git refuses (only punctuation, e.g. ","); a clone URL
    -- with no path
    "name consists only of disallowed characters", "no path specified" } },
}

local function classify(text)
  local t = text:lower()
  for _, rule in ipairs(GIT_RULES) do
    for _, pat in ipairs(rule[3]) do
      if t:find(pat) then return rule[1], rule[2] end
    end
  end
  return 500, "INTERNAL_SERVER_ERROR"
end
M.classify = classify

-- Run git with args in dir; returns the output on success, raises the
-- mapped HttpError otherwise. creds = { username =, password = } or nil.
local function git(app, dir, args, creds, opts)
  local env = common.child_env(app)
  env.GIT_TERMINAL_PROMPT = "0"
  env.GIT_ASKPASS = askpass(app)
  env.SSH_ASKPASS = nil
  env.LC_ALL = "C"   -- git's messages in English, for classify()
  if creds and (creds.username or creds.password) then
    env.DTLUA_GIT_USERNAME = creds.username or ""
    env.DTLUA_GIT_PASSWORD = creds.password or ""
  end
  local argv = { "git" }
  for _, a in ipairs(args) do
    -- arguments are C strings: a NUL in a name, URL or path of the request
    -- cannot reach git (the spawn refuses it)
    if a:find("\0", 1, true) then raise(400, "a field of the request contains a NUL byte", "BAD_REQUEST") end
    argv[#argv + 1] = a
  end
  if (env.DTLUA_GIT_USERNAME or ""):find("\0", 1, true) or (env.DTLUA_GIT_PASSWORD or ""):find("\0", 1, true) then
    raise(400, "username and password must not contain a NUL byte", "BAD_REQUEST")
  end
  local r, msg = proc.run(argv, { cwd = dir, env = env, merge = false })
  if not r then
    -- a directory the user cannot enter (a chmod the client made) is the
    -- request's problem; anything else is ours
    if tostring(msg):lower():find("permission denied", 1, true) then
      raise(403, ("cannot run git in %s: %s"):format(dir, tostring(msg)), "FORBIDDEN")
    end
    -- a field (url, branch, password, ...) past what exec takes in one
    -- argument or environment string (128 KiB on Linux)
    if tostring(msg):lower():find("argument list too long", 1, true) then
      raise(400, "cannot run git: a field of the request is too long (" .. tostring(msg) .. ")", "BAD_REQUEST")
    end
    raise(500, "cannot run git: " .. tostring(msg), "INTERNAL_SERVER_ERROR")
  end
  if r.exit_code ~= 0 and not (opts and opts.ok_codes and opts.ok_codes[r.exit_code]) then
    local text = (r.stderr ~= "" and r.stderr or r.output):gsub("%s+$", "")
    local status, code = classify(text)
    local sub = 1   -- the git command, past its -c NAME=VALUE pairs
    while args[sub] == "-c" do sub = sub + 2 end
    raise(status, ("git %s failed: %s"):format(args[sub], text), code,
          code:find("^GIT_") and DAEMON or nil)
  end
  return r.output, r.exit_code
end

local function body_of(ctx)
  return ctx:json_object(true)
end

-- The repository directory of a request (must exist).
local function repo_dir(app, path, what)
  local dir = common.resolve(app, path, what or "path")
  local st = util.stat(dir, true)
  if not st then raise(404, "repository path not found: " .. dir, "NOT_FOUND") end
  if st.type ~= "directory" then raise(400, "path is not a directory: " .. dir, "BAD_REQUEST") end
  return dir
end

local function creds_of(body)
  return { username = common.str(body, "username"), password = common.str(body, "password") }
end

function M.clone(ctx)
  local app = ctx.app
  local body = body_of(ctx)
  local url = common.str(body, "url", true)
  local path = common.resolve(app, common.str(body, "path", true), "path")
  local branch = common.str(body, "branch")
  local commit = common.str(body, "commit_id")
  local insecure = common.bool(body, "insecure_skip_tls")
  local args = {}
  if insecure then args[#args + 1] = "-c"; args[#args + 1] = "http.sslVerify=false" end
  args[#args + 1] = "clone"
  if branch and branch ~= "" then args[#args + 1] = "--branch"; args[#args + 1] = branch end
  args[#args + 1] = "--"
  args[#args + 1] = url
  args[#args + 1] = path
  local parent = common.dirname(path)
  local ok, msg, code = fs.mkdirs(parent, 493, 493)
  if not ok then common.fs_fail(parent, msg, code) end
  git(app, parent, args, creds_of(body))
  if commit and commit ~= "" then
    git(app, path, { "checkout", "--detach", commit })
  end
  return 200
end

-- porcelain v2 XY letter -> the status names of the protocol
local status_names = {
  ["."] = "Unmodified", M = "Modified", T = "Modified", A = "Added", D = "Deleted",
  R = "Renamed", C = "Copied", U = "Updated but unmerged", ["?"] = "Untracked",
}

function M.status(ctx)
  local app = ctx.app
  local dir = repo_dir(app, common.query_required(ctx.query, "path"))
  local out = git(app, dir, { "status", "--porcelain=v2", "--branch", "-z" })
  local res = { currentBranch = "", fileStatus = json.array(), branchPublished = false }
  local fields = {}
  for f in out:gmatch("([^%z]*)%z") do fields[#fields + 1] = f end
  local i = 1
  while i <= #fields do
    local line = fields[i]
    local kind = line:sub(1, 1)
    if kind == "#" then
      local head = line:match("^# branch%.head (.+)$")
      if head then res.currentBranch = head == "(detached)" and "HEAD" or head end
      if line:match("^# branch%.upstream ") then res.branchPublished = true end
      local a, b = line:match("^# branch%.ab %+(%d+) %-(%d+)$")
      if a then res.ahead, res.behind = tonumber(a), tonumber(b) end
    elseif kind == "1" then
      local xy, path = line:match("^1 (..) %S+ %S+ %S+ %S+ %S+ %S+ (.*)$")
      if xy then
        res.fileStatus[#res.fileStatus + 1] = { name = path, staging = status_names[xy:sub(1, 1)] or "Unmodified",
                                                worktree = status_names[xy:sub(2, 2)] or "Unmodified", extra = "" }
      end
    elseif kind == "2" then
      local xy, path = line:match("^2 (..) %S+ %S+ %S+ %S+ %S+ %S+ %S+ (.*)$")
      local orig = fields[i + 1] or ""
      i = i + 1
      if xy then
        res.fileStatus[#res.fileStatus + 1] = { name = path, staging = status_names[xy:sub(1, 1)] or "Unmodified",
                                                worktree = status_names[xy:sub(2, 2)] or "Unmodified", extra = orig }
      end
    elseif kind == "u" then
      local path = line:match("^u .. %S+ %S+ %S+ %S+ %S+ %S+ %S+ %S+ (.*)$")
      if path then
        res.fileStatus[#res.fileStatus + 1] = { name = path, staging = "Updated but unmerged",
                                                worktree = "Updated but unmerged", extra = "" }
      end
    elseif kind == "?" then
      res.fileStatus[#res.fileStatus + 1] = { name = line:sub(3), staging = "Untracked",
                                              worktree = "Untracked", extra = "" }
    end
    i = i + 1
  end
  return 200, res
end

function M.branches(ctx)
  local app = ctx.app
  local dir = repo_dir(app, common.query_required(ctx.query, "path"))
  local out = git(app, dir, { "branch", "--list", "--format=%(refname:short)" })
  local list = json.array()
  for line in out:gmatch("[^\n]+") do list[#list + 1] = line end
  return 200, { branches = list }
end

function M.create_branch(ctx)
  local app = ctx.app
  local body = body_of(ctx)
  local dir = repo_dir(app, common.str(body, "path", true))
  local name = common.str(body, "name", true)
  -- as the Daytona daemon does: create the branch and switch to it
  git(app, dir, { "checkout", "-b", name })
  return 201
end

function M.delete_branch(ctx)
  local app = ctx.app
  local body = body_of(ctx)
  local dir = repo_dir(app, common.str(body, "path", true))
  local name = common.str(body, "name", true)
  git(app, dir, { "branch", "-D", "--", name })
  return 204
end

function M.checkout(ctx)
  local app = ctx.app
  local body = body_of(ctx)
  local dir = repo_dir(app, common.str(body, "path", true))
  local branch = common.str(body, "branch", true)
  git(app, dir, { "checkout", branch, "--" })
  return 200
end

function M.add(ctx)
  local app = ctx.app
  local body = body_of(ctx)
  local dir = repo_dir(app, common.str(body, "path", true))
  local files = common.str_list(body, "files", true)
  if #files == 0 then
    raise(400, "invalid request body: field 'files' must not be empty", "INVALID_REQUEST_BODY")
  end
  local args = { "add", "--" }
  for _, f in ipairs(files) do args[#args + 1] = f end
  git(app, dir, args)
  return 200
end

function M.commit(ctx)
  local app = ctx.app
  local body = body_of(ctx)
  local dir = repo_dir(app, common.str(body, "path", true))
  local message = common.str(body, "message", true)
  local author = common.str(body, "author", true)
  local email = common.str(body, "email", true)
  local allow_empty = common.bool(body, "allow_empty")
  local args = { "-c", "user.name=" .. author, "-c", "user.email=" .. email,
                 "-c", "commit.gpgsign=false", "commit", "-q", "-m", message }
  if allow_empty then args[#args + 1] = "--allow-empty" end
  git(app, dir, args)
  local hash = git(app, dir, { "rev-parse", "HEAD" }):gsub("%s+$", "")
  return 200, { hash = hash }
end

-- The current branch's upstream remote, or nil when it has none.
local function upstream(app, dir)
  local out, code = git(app, dir, { "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}" },
                        nil, { ok_codes = { [128] = true } })
  if code ~= 0 then return nil end
  return out:gsub("%s+$", "")
end

local function only_remote(app, dir)
  local out = git(app, dir, { "remote" })
  local first = out:match("([^\n]+)")
  if out:find("^origin$") or out:find("\norigin\n") or out:find("^origin\n") then return "origin" end
  return first
end

function M.push(ctx)
  local app = ctx.app
  local body = body_of(ctx)
  local dir = repo_dir(app, common.str(body, "path", true))
  if upstream(app, dir) then
    git(app, dir, { "push" }, creds_of(body))
  else
    local remote = only_remote(app, dir)
    if not remote then
      raise(404, "git push failed: the repository has no remote to push to", "GIT_REPO_NOT_FOUND", DAEMON)
    end
    git(app, dir, { "push", "--set-upstream", remote, "HEAD" }, creds_of(body))
  end
  return 200
end

function M.pull(ctx)
  local app = ctx.app
  local body = body_of(ctx)
  local dir = repo_dir(app, common.str(body, "path", true))
  local args = { "-c", "pull.rebase=false", "pull", "--no-edit" }
  if not upstream(app, dir) then
    local remote = only_remote(app, dir)
    if not remote then
      raise(404, "git pull failed: the repository has no remote to pull from", "GIT_REPO_NOT_FOUND", DAEMON)
    end
    local branch = git(app, dir, { "rev-parse", "--abbrev-ref", "HEAD" }):gsub("%s+$", "")
    args[#args + 1] = remote
    args[#args + 1] = branch
  end
  git(app, dir, args, creds_of(body))
  return 200
end

function M.history(ctx)
  local app = ctx.app
  local dir = repo_dir(app, common.query_required(ctx.query, "path"))
  local list = json.array()
  -- a repository without commits has an empty history, not an error
  local _, has_head = git(app, dir, { "rev-parse", "--verify", "-q", "HEAD" }, nil, { ok_codes = { [1] = true } })
  if has_head ~= 0 then return 200, list end
  local out = git(app, dir, { "log", "--format=%H%x00%an%x00%ae%x00%aI%x00%B%x1e" })
  for rec in out:gmatch("([^\30]+)\30") do
    local hash, an, ae, date, msg = rec:match("^%s*(%x+)%z(.-)%z(.-)%z(.-)%z(.*)$")
    if hash then
      list[#list + 1] = { hash = hash, author = an, email = ae, timestamp = date,
                          message = (msg:gsub("%s+$", "")) }
    end
  end
  return 200, list
end

return M
