--- Declarative images: a Dockerfile built in Lua, for `client:create{ image = }`
-- and `client.snapshot:create{ image = }`.
--
--     local Image = require "daytona.image"
--     local img = Image.debian_slim("3.12")
--       :pip_install({ "requests", "pytest" })
--       :run_commands("apt-get update && apt-get install -y git")
--       :env{ PROJECT = "demo" }
--       :workdir("/home/daytona")
--     local sb <close> = client:create({ image = img }, { timeout = 0, on_snapshot_create_logs = print })
--     print(img.dockerfile)
--
-- The Dockerfile text is the official SDKs' for the same calls.
--
-- Local files: `add_local_file`, `add_local_dir`,
-- `pip_install_from_requirements` add a COPY of a build context (the
-- local path, named in the archive and the COPY line by its normalised
-- path without a leading "/", as the Python SDK does) and remember the
-- path in `img._contexts`; the create uploads each context through the
-- API's object storage (daytona.object_storage) and sends their hashes as
-- `buildInfo.contextHashes`. A missing path is a DaytonaNotFoundError, a
-- path of the wrong kind or a relative path that leaves the current
-- directory ("../x", outside the project: the builder could not find it in
-- the context) a DaytonaValidationError, raised by the method itself.
-- `from_dockerfile` and `dockerfile_commands` upload the sources of their
-- COPY lines (relative to the Dockerfile's directory, or `context_dir`) the
-- same way; ADD of local files and wildcards are refused with a
-- DaytonaValidationError rather than built from something else.
local check = require "daytona.check"
local errors = require "daytona.errors"

local object_storage = require "daytona.object_storage"
local toml = require "daytona.toml"
local core = require "daytona.core"

local type, ipairs, pairs, setmetatable, error, io, table, tostring = type, ipairs, pairs, setmetatable, error, io, table, tostring
local concat, sort = table.concat, table.sort

local M = {}

local Image = {}
Image.__index = Image
Image.__name = "daytona.image.Image"
M.Image = Image

local SUPPORTED = { ["3.9"] = "22", ["3.10"] = "17", ["3.11"] = "12", ["3.12"] = "10", ["3.13"] = "3" }
local LATEST = "3.13"

local function new(dockerfile)
  return setmetatable({ dockerfile = dockerfile, _contexts = {} }, Image)
end

--- Quote a word for a shell the way the official SDKs do (shell-quote).
-- @param s string
-- @return string
function M.quote(s)
  if s:find('["%s]') and not s:find("'") then
    return "'" .. s:gsub("(['\\])", "\\%1") .. "'"
  elseif s:find("[\"'%s]") then
    return '"' .. s:gsub('(["\\$`!])', "\\%1") .. '"'
  end
  return (s:gsub("([#!\"$&'()*,:;<=>?@%[\\%]^`{|}])", "\\%1"))
end
local quote = M.quote

--- An image from an existing base image.
-- @param image image reference, e.g. "python:3.12-slim"
-- @return Image
function M.base(image)
  return new("FROM " .. check.string(image, "Image.base", "image") .. "\n")
end

--- A Debian slim image with Python (3.9 to 3.13; default the latest) and
-- build tools.
-- @param python_version optional "3.12"-style series
-- @return Image
function M.debian_slim(python_version)
  local series = check.optstring(python_version, "Image.debian_slim", "python_version") or LATEST
  local micro = SUPPORTED[series]
  if not micro then
    check.argerror("Image.debian_slim", "python_version", "one of 3.9, 3.10, 3.11, 3.12, 3.13 expected, got " .. series)
  end
  return new(concat({
    "FROM python:" .. series .. "." .. micro .. "-slim-bookworm",
    "RUN apt-get update",
    "RUN apt-get install -y gcc gfortran build-essential",
    "RUN pip install --upgrade pip",
    "RUN echo 'debconf debconf/frontend select Noninteractive' | debconf-set-selections",
  }, "\n") .. "\n")
end

-- The sources of a COPY line (flags and destination left out), or nil when
-- the line is no COPY of local files (another instruction, --from, a heredoc).
local function copy_sources(line)
  local rest = line:match("^%s*[Cc][Oo][Pp][Yy]%s+(.-)%s*$")
  if not rest or rest:find("--from=", 1, true) or rest:find("<<", 1, true) then return nil end
  while rest:match("^%-%-%S+%s+") do rest = rest:gsub("^%-%-%S+%s+", "", 1) end
  local words = {}
  if rest:match("^%[") then
    local v = require("daytona.wire").json.decode(rest)
    if type(v) == "table" then for _, w in ipairs(v) do words[#words + 1] = tostring(w) end end
  else
    for w in rest:gmatch("%S+") do words[#words + 1] = w end
  end
  words[#words] = nil
  return words
end

-- COPY sources of Dockerfile text as build contexts (the Python SDK's
-- from_dockerfile / dockerfile_commands): each relative to `prefix` (the
-- Dockerfile's directory, "" for the current one, or a context_dir), stored
-- in the archive under the path the COPY line names. ADD of local files is
-- refused (the SDKs upload only COPY sources).
local function add_copy_contexts(self, text, prefix, fname, arg)
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local l = line:gsub("^%s+", "")
    if l:match("^[Aa][Dd][Dd]%s") and not l:match("^%S+%s+[%a][%w+.-]*://") then
      check.argerror(fname, arg, "ADD of local files is not uploaded with the build context; use COPY: " .. l)
    end
    for _, src in ipairs(copy_sources(l) or {}) do
      if src:find("[*?%[]") then
        check.argerror(fname, arg, "COPY sources with wildcards are not supported: " .. src)
      end
      local full = src:sub(1, 1) == "/" and src or (prefix .. src)
      if not core.util.stat(full) then
        error(errors.DaytonaNotFoundError(("COPY source %s (%s) does not exist"):format(src, full),
          { code = "ENOENT" }), 0)
      end
      local archive = full
      if prefix ~= "" and src:sub(1, #prefix) ~= prefix then archive = full:sub(#prefix + 1) end
      archive = object_storage.archive_base_path(archive)
      if archive == ".." or archive:sub(1, 3) == "../" then
        check.argerror(fname, arg, ("COPY source %s is outside the project"):format(src))
      end
      self._contexts[#self._contexts + 1] = { source_path = full, archive_path = archive }
    end
  end
end

--- An image from a Dockerfile on this machine; its COPY sources (relative
-- to the Dockerfile's directory) are uploaded as its build context, as the
-- Python SDK does.
-- @param path the Dockerfile
-- @return Image
-- @raise DaytonaNotFoundError if it or a COPY source does not exist;
--   DaytonaValidationError for ADD of local files, wildcards, a source
--   outside the project
function M.from_dockerfile(path)
  path = check.string(path, "Image.from_dockerfile", "path")
  path = object_storage.expanduser(path)
  local f = io.open(path, "rb")
  if not f then error(errors.DaytonaNotFoundError("Dockerfile " .. path .. " does not exist", { code = "ENOENT" }), 0) end
  local text = f:read("a")
  f:close()
  if not text then check.argerror("Image.from_dockerfile", "path", "a readable file expected") end
  if text:sub(-1) ~= "\n" then text = text .. "\n" end
  local img = new(text)
  add_copy_contexts(img, text, path:match("^(.*/)") or "", "Image.from_dockerfile", "path")
  return img
end

local function flatten(v, out, fname, arg)
  if type(v) == "string" then out[#out + 1] = v; return out end
  if type(v) ~= "table" then check.argerror(fname, arg, "strings or lists of strings expected") end
  for _, x in ipairs(v) do flatten(x, out, fname, arg) end
  return out
end

local PIP_OPTS = check.set("find_links", "index_url", "extra_index_urls", "pre", "extra_options")

-- The pip options after the packages, as the official SDKs format them.
local function pip_args(opts, f)
  opts = check.options(opts, f, PIP_OPTS)
  local extra = {}
  for _, l in ipairs(opts.find_links and check.strlist(opts.find_links, f, "find_links") or {}) do
    extra[#extra + 1] = " --find-links " .. quote(l)
  end
  if opts.index_url then extra[#extra + 1] = " --index-url " .. quote(check.string(opts.index_url, f, "index_url")) end
  for _, u in ipairs(opts.extra_index_urls and check.strlist(opts.extra_index_urls, f, "extra_index_urls") or {}) do
    extra[#extra + 1] = " --extra-index-url " .. quote(u)
  end
  if check.optboolean(opts.pre, f, "pre") then extra[#extra + 1] = " --pre" end
  if opts.extra_options then
    extra[#extra + 1] = " " .. check.string(opts.extra_options, f, "extra_options"):match("^%s*(.-)%s*$")
  end
  return concat(extra)
end

--- pip install packages (sorted, as the official SDKs do).
-- @param packages a package string or a list of them
-- @param opts optional `{ find_links = { }, index_url = , extra_index_urls = { },
--   pre = bool, extra_options = "..." }`
-- @return self
function Image:pip_install(packages, opts)
  local f = "pip_install"
  local pkgs = flatten(packages, {}, f, "packages")
  local extra = pip_args(opts, f)
  if #pkgs == 0 then return self end
  sort(pkgs)
  local q = {}
  for i, p in ipairs(pkgs) do q[i] = quote(p) end
  self.dockerfile = self.dockerfile .. "RUN python -m pip install " .. concat(q, " ") .. extra .. "\n"
  return self
end

-- A local path for the build context: expanded (~), checked to exist and
-- be of `kind` ("file" or "directory"), and its archive path checked to
-- stay inside the context. Returns the path and its archive path.
local function context_path(path, kind, fname, what)
  local p = object_storage.expanduser(path)
  local st = core.util.stat(p)
  if not st then
    error(errors.DaytonaNotFoundError(("%s %s does not exist"):format(what, path), { code = "ENOENT" }), 0)
  end
  if st.type ~= kind then
    check.argerror(fname, "local_path", ("%s exists but is not a %s"):format(path, kind))
  end
  local archive = object_storage.archive_base_path(p)
  if archive == ".." or archive:sub(1, 3) == "../" or archive == "." or archive == "" then
    check.argerror(fname, "local_path", ("%s is outside the project (the current directory): "
      .. "give a path below it or an absolute path"):format(path))
  end
  return p, archive
end

local function add_context(self, source, archive)
  self._contexts[#self._contexts + 1] = { source_path = source, archive_path = archive }
end

--- COPY a local file into the image (uploaded with the build context).
-- @param local_path the file here
-- @param remote_path where in the image; ending in "/", the file's name is added
-- @return self
-- @raise DaytonaNotFoundError (missing), DaytonaValidationError (not a
--   file, outside the project)
function Image:add_local_file(local_path, remote_path)
  local f = "add_local_file"
  local_path = check.string(local_path, f, "local_path")
  remote_path = check.string(remote_path, f, "remote_path")
  if remote_path:sub(-1) == "/" then remote_path = remote_path .. local_path:gsub("/+$", ""):match("([^/]*)$") end
  local src, archive = context_path(local_path, "file", f, "Local file")
  add_context(self, src, archive)
  self.dockerfile = self.dockerfile .. "COPY " .. archive .. " " .. remote_path .. "\n"
  return self
end

--- COPY a local directory into the image (its contents at remote_path).
-- @param local_path the directory here
-- @param remote_path where in the image
-- @return self
-- @raise DaytonaNotFoundError (missing), DaytonaValidationError (not a
--   directory, outside the project)
function Image:add_local_dir(local_path, remote_path)
  local f = "add_local_dir"
  local_path = check.string(local_path, f, "local_path")
  remote_path = check.string(remote_path, f, "remote_path")
  local src, archive = context_path(local_path, "directory", f, "Local directory")
  add_context(self, src, archive)
  self.dockerfile = self.dockerfile .. "COPY " .. archive .. " " .. remote_path .. "\n"
  return self
end

--- pip install -r a local requirements.txt (copied to /.requirements.txt).
-- @param requirements_txt the file here
-- @param opts optional, as pip_install's
-- @return self
function Image:pip_install_from_requirements(requirements_txt, opts)
  local f = "pip_install_from_requirements"
  requirements_txt = check.string(requirements_txt, f, "requirements_txt")
  local src, archive = context_path(requirements_txt, "file", f, "Requirements file")
  local extra = pip_args(opts, f)
  add_context(self, src, archive)
  self.dockerfile = self.dockerfile .. "COPY " .. archive .. " /.requirements.txt\n"
    .. "RUN python -m pip install -r /.requirements.txt" .. extra .. "\n"
  return self
end

--- pip install the dependencies a local pyproject.toml declares
-- ([project] dependencies, plus the optional-dependencies groups named).
-- @param pyproject_toml the file here
-- @param opts optional `{ optional_dependencies = { "dev", ... } }` and
--   pip_install's options
-- @return self
-- @raise DaytonaNotFoundError (missing), DaytonaValidationError (no
--   [project.dependencies], invalid TOML)
function Image:pip_install_from_pyproject(pyproject_toml, opts)
  local f = "pip_install_from_pyproject"
  pyproject_toml = check.string(pyproject_toml, f, "pyproject_toml")
  local p = object_storage.expanduser(pyproject_toml)
  local fh = io.open(p, "rb")
  if not fh then
    error(errors.DaytonaNotFoundError(("pyproject.toml file %s does not exist"):format(pyproject_toml),
      { code = "ENOENT" }), 0)
  end
  local text = fh:read("a")
  fh:close()
  if not text then check.argerror(f, "pyproject_toml", pyproject_toml .. " exists but is not a file") end
  opts = opts or {}
  check.table(opts, f, "opts")
  local groups = opts.optional_dependencies and check.strlist(opts.optional_dependencies, f,
    "optional_dependencies", true) or {}
  local pip_opts = {}
  for k, v in pairs(opts) do if k ~= "optional_dependencies" then pip_opts[k] = v end end
  local doc, err = toml.decode(text)
  if not doc then check.argerror(f, "pyproject_toml", ("invalid pyproject.toml file %s: %s"):format(pyproject_toml, err)) end
  local project = doc.project
  if type(project) ~= "table" or type(project.dependencies) ~= "table" then
    check.argerror(f, "pyproject_toml", "No [project.dependencies] section in pyproject.toml file. "
      .. "See https://packaging.python.org/en/latest/guides/writing-pyproject-toml for further file format guidelines.")
  end
  local deps = {}
  for _, d in ipairs(project.dependencies) do deps[#deps + 1] = tostring(d) end
  if #groups > 0 then
    local optional = project["optional-dependencies"]
    if optional ~= nil and type(optional) ~= "table" then
      check.argerror(f, "pyproject_toml", "optional-dependencies must be a mapping in pyproject.toml")
    end
    for _, g in ipairs(groups) do
      local list = optional and optional[g]
      if type(list) == "table" then
        for _, d in ipairs(list) do deps[#deps + 1] = tostring(d) end
      end
    end
  end
  return self:pip_install(deps, pip_opts)
end

--- RUN commands: each argument is a shell command string, or a list of
-- arguments (exec form).
-- @param ... commands
-- @return self
function Image:run_commands(...)
  local n = select("#", ...)
  if n == 0 then check.argerror("run_commands", "commands", "at least one command expected") end
  for i = 1, n do
    local c = select(i, ...)
    if type(c) == "table" then
      local parts = {}
      for j, a in ipairs(check.strlist(c, "run_commands", ("commands[%d]"):format(i))) do
        parts[j] = '"' .. a:gsub('"', '\\\\\\"'):gsub("'", "\\'") .. '"'
      end
      self.dockerfile = self.dockerfile .. "RUN " .. concat(parts, " ") .. "\n"
    else
      self.dockerfile = self.dockerfile .. "RUN " .. check.string(c, "run_commands", ("commands[%d]"):format(i)) .. "\n"
    end
  end
  return self
end

--- ENV variables (in name order, for a stable Dockerfile).
-- @param vars table of name -> string
-- @return self
function Image:env(vars)
  vars = check.strmap(check.table(vars, "env", "vars"), "env", "vars")
  local names = {}
  for k in pairs(vars) do names[#names + 1] = k end
  sort(names)
  for _, k in ipairs(names) do
    self.dockerfile = self.dockerfile .. "ENV " .. k .. "=" .. quote(vars[k]) .. "\n"
  end
  return self
end

--- WORKDIR.
-- @param path string
-- @return self
function Image:workdir(path)
  self.dockerfile = self.dockerfile .. "WORKDIR " .. quote(check.string(path, "workdir", "path")) .. "\n"
  return self
end

local function exec_form(list, fname)
  local parts = {}
  for i, a in ipairs(check.strlist(list, fname, "commands")) do parts[i] = '"' .. a .. '"' end
  return "[" .. concat(parts, ", ") .. "]"
end

--- ENTRYPOINT (exec form).
-- @param commands list of strings
-- @return self
function Image:entrypoint(commands)
  self.dockerfile = self.dockerfile .. "ENTRYPOINT " .. exec_form(commands, "entrypoint") .. "\n"
  return self
end

--- CMD (exec form).
-- @param commands list of strings
-- @return self
function Image:cmd(commands)
  self.dockerfile = self.dockerfile .. "CMD " .. exec_form(commands, "cmd") .. "\n"
  return self
end

--- Raw Dockerfile lines; COPY sources in them (relative to `context_dir`,
-- default the current directory) are uploaded as build context, as the
-- Python SDK does.
-- @param lines list of strings
-- @param context_dir optional directory the COPY sources are relative to
-- @return self
-- @raise as from_dockerfile; DaytonaNotFoundError for a missing context_dir
function Image:dockerfile_commands(lines, context_dir)
  lines = check.strlist(lines, "dockerfile_commands", "lines")
  local prefix = ""
  if context_dir ~= nil then
    context_dir = object_storage.expanduser(check.string(context_dir, "dockerfile_commands", "context_dir"))
    local st = core.util.stat(context_dir)
    if not st or st.type ~= "directory" then
      error(errors.DaytonaNotFoundError("Context directory " .. context_dir .. " does not exist", { code = "ENOENT" }), 0)
    end
    prefix = context_dir:gsub("/*$", "/")
  end
  local text = concat(lines, "\n")
  add_copy_contexts(self, text, prefix, "dockerfile_commands", "lines")
  self.dockerfile = self.dockerfile .. text .. "\n"
  return self
end

function Image:__tostring()
  return self.dockerfile
end

--- True if v is an Image.
-- @param v any value
-- @return boolean
function M.is(v)
  return getmetatable(v) == Image
end


-- a call with '.' instead of ':' says so
check.methods(Image, "image")

return M
