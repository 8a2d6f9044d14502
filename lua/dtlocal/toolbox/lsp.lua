--- dtlocal.toolbox.lsp: language servers in the sandbox (doc/protocol.md §4.8).
--
-- `/lsp/*` are backed by real language servers run by the daemon over their
-- stdio, speaking JSON-RPC 2.0 with `Content-Length` framing (the Language
-- Server Protocol's base protocol):
--   python                  `pylsp` (Debian's python3-pylsp)
--   typescript, javascript  `typescript-language-server --stdio` (npm), with
--                           the global `typescript` it finds beside itself
-- Neither is installed here on first use: `make deps` installs both on the
-- host, and a sandbox sees them through its /usr overlay. A sandbox without
-- one gets an error naming the package.
--
-- One server per (language, project directory), made by `/lsp/start` and
-- reused by every later call with the same pair; the initialize/initialized
-- handshake is done once, when it starts. `/lsp/stop` (or the daemon's
-- close) asks it to shut down and then ends everything it started (the
-- typescript server's tsserver children too: they carry its process tag).
-- Requests carry their own ids and wait in a pending table, so concurrent
-- calls each get their own answer whatever order the server answers in. A
-- server that exits is reported: the calls waiting on it fail with its exit
-- status and the end of its stderr, later ones say it exited, and
-- `/lsp/start` starts a new one.
--
-- Wire (upstream apps/daemon/pkg/toolbox/lsp): bodies and queries carry
-- `languageId`, `pathToProject` and, per document, `uri` = `file://` +
-- absolute path (a relative path resolves against the project, as the SDKs
-- document); positions are zero-based. Answers: `[]` of
-- `{name, kind, location = {uri, range}}` for symbols, `{isIncomplete,
-- items = [{label, kind, detail, documentation, sortText, filterText,
-- insertText}]}` for completions. Errors carry the daemon's codes with
-- `source: "DAYTONA_DAEMON"`: 400 LSP_INVALID_REQUEST (unknown language, a
-- uri that is no `file://` path, a position past the end of the document),
-- 400 LSP_SERVER_NOT_INITIALIZED (no server started for the pair, or it
-- exited), 404 FILE_NOT_FOUND (a project or document that is not in the
-- sandbox), 500 when the server cannot start or dies during a call, 408
-- when it does not answer in time.
--
-- pylsp has no `workspace/symbol`: for a server that does not offer it,
-- workspace symbols are the document symbols of the project's files of its
-- language whose names contain the query (case-insensitive), at most
-- MAX_SCAN files.
local core = require "daytona.core"
local scheduler = require "daytona.runtime.scheduler"
local process = require "daytona.runtime.process"
local http = require "dtlocal.http"
local common = require "dtlocal.toolbox.common"
local proc = require "dtlocal.toolbox.proc"

local util = core.util
local json = http.json
local raise = http.raise
local setmetatable, pairs, ipairs, tostring, tonumber, type, table, string, math, pcall, error, utf8 =
  setmetatable, pairs, ipairs, tostring, tonumber, type, table, string, math, pcall, error, utf8

local M = {}

local START_TIMEOUT = 60     -- initialize: tsserver loads its lib files first
local REQUEST_TIMEOUT = 30
local SHUTDOWN_GRACE = 3     -- for the shutdown request, then for the exit
local MAX_DOCUMENT = 8 * 1024 * 1024
local MAX_MESSAGE = 64 * 1024 * 1024
local STDERR_TAIL = 2000
local MAX_SCAN = 200         -- files read for the workspace-symbol fallback
local MAX_DEPTH = 8

local TS = { "ts", "tsx", "mts", "cts", "js", "jsx", "mjs", "cjs" }
local LANGUAGES = {
  python = { argv = { "pylsp" }, package = "python3-pylsp (apt-get install python3-pylsp)",
             exts = { "py", "pyi" } },
  typescript = { argv = { "typescript-language-server", "--stdio" },
                 package = "typescript-language-server and typescript (npm install -g typescript-language-server typescript)",
                 exts = TS },
}
LANGUAGES.javascript = LANGUAGES.typescript

-- directories the symbol scan never enters: dependencies and caches, not
-- the project's own code
local SKIP_DIRS = { node_modules = true, __pycache__ = true, venv = true, ["site-packages"] = true,
                    dist = true, build = true }

local DAEMON = { source = "DAYTONA_DAEMON" }

local function invalid(msg) raise(400, msg, "LSP_INVALID_REQUEST", DAEMON) end

---------------------------------------------------------------------------
-- URIs
---------------------------------------------------------------------------

local function pct_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- RFC 3986 path characters stay; the rest (spaces, '%', '#', '?') is escaped
local function uri_of(path)
  return "file://" .. path:gsub("[^%w%-%._~/!$&'()*+,;=:@]", function(c) return ("%%%02X"):format(c:byte()) end)
end
M.uri_of = uri_of

-- A request's document uri -> the absolute, cleaned path in the sandbox.
-- Relative paths resolve against the project (`file://src/a.py` is what an
-- SDK sends for "src/a.py").
local function document_path(app, project, uri)
  if type(uri) ~= "string" or uri == "" then invalid("uri is required") end
  local rest = uri:match("^file://(.*)$")
  if not rest then invalid(("uri %q: a file:// URI is required (file:// + the path in the sandbox)"):format(uri)) end
  if rest:sub(1, 10) == "localhost/" then rest = rest:sub(10) end
  local path = pct_decode(rest)
  if path:sub(1, 1) ~= "/" and path:sub(1, 1) ~= "~" then path = project .. "/" .. path end
  return common.resolve(app, path, "uri")
end

---------------------------------------------------------------------------
-- The JSON-RPC connection to one server
---------------------------------------------------------------------------

local Server = {}
Server.__index = Server
Server.__name = "dtlocal.toolbox.lsp.Server"

function Server:describe()
  return ("the %s language server for %s"):format(self.language, self.project)
end

-- Why the server is gone, for every call that meets it so.
function Server:death()
  local d = self.dead
  local why = d.signal and ("killed by %s"):format(d.signal)
    or d.exit_code and ("exit code %d"):format(d.exit_code) or d.reason or "it ended"
  local tail = self.stderr_tail:gsub("%s+$", ""):match("([^\n]*)$")
  if tail and tail ~= "" then why = why .. "; last stderr: " .. tail:sub(-300) end
  return ("%s exited (%s)"):format(self:describe(), why)
end

function Server:send(msg)
  msg.jsonrpc = "2.0"
  local body = json.encode(msg)
  local ok, emsg = self.proc:write(("Content-Length: %d\r\n\r\n"):format(#body) .. body)
  if not ok then self:mark_dead("its stdin closed: " .. tostring(emsg)) end
  return ok
end

function Server:mark_dead(reason)
  if self.dead then return end
  local code, sig = self.proc:status()
  self.dead = { exit_code = code, signal = sig, reason = reason }
  self.event:notify()
end

-- A message from the server: a response to one of ours, a request of its
-- own (answered at once: we offer no client features, so null, or one null
-- per item for workspace/configuration), or a notification (ignored:
-- diagnostics, progress, logs).
function Server:dispatch(msg)
  if type(msg) ~= "table" then return end
  if msg.method == nil and msg.id ~= nil then
    local slot = self.pending[msg.id]
    if slot then
      self.pending[msg.id] = nil
      slot.done, slot.result, slot.error = true, msg.result, msg.error
      self.event:notify()
    end
  elseif msg.method ~= nil and msg.id ~= nil then
    local result = json.null
    if msg.method == "workspace/configuration" and type(msg.params) == "table"
       and type(msg.params.items) == "table" then
      result = json.array()
      for i = 1, #msg.params.items do result[i] = json.null end
    end
    self:send { id = msg.id, result = result }
  end
end

-- Read the server's stdout: headers up to a blank line, then
-- Content-Length bytes of JSON.
function Server:read_loop()
  local p, buf = self.proc, ""
  while true do
    local hend = buf:find("\r\n\r\n", 1, true)
    local len = hend and tonumber(buf:sub(1, hend):lower():match("content%-length:%s*(%d+)"))
    if hend and not len then
      self:mark_dead("it sent a message without Content-Length")
      break
    end
    if len and len > MAX_MESSAGE then
      self:mark_dead(("it sent a message of %d bytes"):format(len))
      break
    end
    if len and #buf >= hend + 3 + len then
      local body = buf:sub(hend + 4, hend + 3 + len)
      buf = buf:sub(hend + 4 + len)
      self:dispatch(json.decode(body))
    else
      local chunk = p:read("stdout")
      if not chunk then break end
      buf = buf .. chunk
    end
  end
  p:wait(SHUTDOWN_GRACE)   -- its stdout is closed: it is exiting, or about to be killed
  self:mark_dead()
end

function Server:stderr_loop()
  while true do
    local chunk = self.proc:read("stderr")
    if not chunk then break end
    self.stderr_tail = (self.stderr_tail .. chunk):sub(-STDERR_TAIL)
  end
end

-- Send a request and wait for its answer; raises an HttpError when the
-- server is gone, answers with an error, or takes longer than `timeout`.
function Server:request(method, params, timeout)
  if self.dead then raise(500, self:death(), "INTERNAL_SERVER_ERROR") end
  local id = self.next_id
  self.next_id = id + 1
  local slot = {}
  self.pending[id] = slot
  if not self:send { id = id, method = method, params = params } then
    self.pending[id] = nil
    raise(500, self:death(), "INTERNAL_SERVER_ERROR")
  end
  local deadline = core.now() + (timeout or REQUEST_TIMEOUT)
  while not slot.done do
    if self.dead then
      self.pending[id] = nil
      raise(500, ("%s: %s"):format(method, self:death()), "INTERNAL_SERVER_ERROR")
    end
    local left = deadline - core.now()
    if left <= 0 then
      self.pending[id] = nil
      self:send { method = "$/cancelRequest", params = { id = id } }
      raise(408, ("%s: %s did not answer within %g s"):format(method, self:describe(), timeout or REQUEST_TIMEOUT),
            "REQUEST_TIMEOUT")
    end
    self.event:wait(left)
  end
  if slot.error ~= nil and slot.error ~= json.null then
    local e = type(slot.error) == "table" and slot.error or {}
    raise(400, ("%s: %s answered: %s"):format(method, self:describe(), tostring(e.message or "an error")),
          "LSP_INVALID_REQUEST", DAEMON)
  end
  return slot.result
end

function Server:notify(method, params)
  if self.dead then raise(500, self:death(), "INTERNAL_SERVER_ERROR") end
  if not self:send { method = method, params = params or {} } then raise(500, self:death(), "INTERNAL_SERVER_ERROR") end
end

-- End the process and everything it started, now.
function Server:kill()
  self.stopping = true
  self.proc:close()
  self.tag:kill()
  self:mark_dead("stopped")
end

-- The protocol's goodbye (shutdown request, exit notification), then kill
-- whatever is left.
function Server:stop()
  if not self.dead then
    pcall(self.request, self, "shutdown", json.null, SHUTDOWN_GRACE)
    if not self.dead then pcall(self.send, self, { method = "exit" }) end
    self.proc:wait(SHUTDOWN_GRACE)
  end
  self:kill()
end

---------------------------------------------------------------------------
-- Registry
---------------------------------------------------------------------------

local function registry(app)
  if not app.lsp_servers then app.lsp_servers = {} end
  return app.lsp_servers
end

local function key_of(language, project) return language .. "\0" .. project end

local function language_of(id)
  if type(id) ~= "string" or id == "" then invalid("languageId is required (python, typescript or javascript)") end
  local lang = LANGUAGES[id]
  if not lang then
    invalid(("unsupported languageId %q: python, typescript or javascript"):format(id:sub(1, 64)))
  end
  return lang
end

local function project_of(app, path)
  if type(path) ~= "string" or path == "" then invalid("pathToProject is required") end
  local dir = common.resolve(app, path, "pathToProject")
  local st = util.stat(dir, true)
  if not st then
    raise(404, ("pathToProject: no such directory in the sandbox: %s"):format(dir), "FILE_NOT_FOUND", DAEMON)
  elseif st.type ~= "directory" then
    invalid(("pathToProject: not a directory: %s"):format(dir))
  end
  return dir
end

-- The running server for a request's languageId and pathToProject.
local function running(app, language_id, path)
  language_of(language_id)
  if type(path) ~= "string" or path == "" then invalid("pathToProject is required") end
  local project = common.resolve(app, path, "pathToProject")
  local s = registry(app)[key_of(language_id, project)]
  if not s or s.starting then
    raise(400, ("no %s language server is running for %s: start it first (POST /lsp/start)"):format(
      language_id, project), "LSP_SERVER_NOT_INITIALIZED", DAEMON)
  end
  if s.dead then
    raise(400, s:death() .. ": start it again (POST /lsp/start)", "LSP_SERVER_NOT_INITIALIZED", DAEMON)
  end
  return s
end

local function capabilities()
  return {
    textDocument = {
      synchronization = { didSave = false, dynamicRegistration = false },
      completion = { contextSupport = true, completionItem = {
        snippetSupport = false, documentationFormat = json.array { "markdown", "plaintext" } } },
      -- no hierarchicalDocumentSymbolSupport: flat SymbolInformation, the
      -- wire's LspSymbol shape
      documentSymbol = { symbolKind = { valueSet = json.array((function()
        local t = {} for i = 1, 26 do t[i] = i end return t end)()) } },
    },
    workspace = { symbol = { dynamicRegistration = false }, workspaceFolders = true, configuration = false },
  }
end

local function spawn_server(app, language_id, project)
  local lang = LANGUAGES[language_id]
  local env = common.child_env(app)
  local program = proc.which(lang.argv[1], env.PATH)
  if not program then
    raise(500, ("cannot start the %s language server: %s is not installed in this sandbox (install %s)"):format(
      language_id, lang.argv[1], lang.package), "INTERNAL_SERVER_ERROR")
  end
  local tag = proc.tag()
  local argv = { program, table.unpack(lang.argv, 2) }
  local p, msg = process.spawn(argv, { cwd = project, env = tag:env(env), stdin = "pipe", stdout = "pipe",
                                       stderr = "pipe" })
  if not p then
    raise(500, ("cannot start the %s language server (%s): %s"):format(language_id, program, tostring(msg)),
          "INTERNAL_SERVER_ERROR")
  end
  local s = setmetatable({ app = app, language = language_id, lang = lang, project = project, proc = p, tag = tag,
                           next_id = 1, pending = {}, event = proc.event(), stderr_tail = "", docs = {},
                           starting = true }, Server)
  scheduler.spawn(function() s:read_loop() end).observed = true
  scheduler.spawn(function() s:stderr_loop() end).observed = true
  return s
end

-- Start and initialize a server; the registry holds it (starting) meanwhile,
-- so that a second start for the same pair waits for this one.
local function start_server(app, language_id, project)
  local reg, key = registry(app), key_of(language_id, project)
  local s = spawn_server(app, language_id, project)
  reg[key] = s
  local ok, err = pcall(function()
    local root = uri_of(project)
    local result = s:request("initialize", {
      processId = util.getpid(), rootUri = root, rootPath = project,
      workspaceFolders = json.array { { uri = root, name = project:match("([^/]*)$") } },
      clientInfo = { name = "dtlocal", version = "1" },
      capabilities = capabilities(),
    }, START_TIMEOUT)
    s.caps = type(result) == "table" and type(result.capabilities) == "table" and result.capabilities or {}
    s:notify("initialized", {})
  end)
  s.starting = nil
  s.event:notify()
  if not ok then
    if reg[key] == s then reg[key] = nil end
    s:kill()
    if http.is_http_error(err) then
      err = http.http_error(500, ("cannot start %s: %s"):format(s:describe(), err.message), "INTERNAL_SERVER_ERROR")
    end
    error(err, 0)
  end
  return s
end

function M.shutdown(app)
  local reg = registry(app)
  for key, s in pairs(reg) do
    reg[key] = nil
    s:kill()
  end
end

---------------------------------------------------------------------------
-- Documents
---------------------------------------------------------------------------

local function read_document(path)
  local f, msg, code = common.open_regular(path, "rb")
  if not f then
    if code == "ENOENT" or code == "ENOTDIR" then
      raise(404, ("uri: no such file in the sandbox: %s"):format(path), "FILE_NOT_FOUND", DAEMON)
    end
    common.fs_fail(path, msg, code)
  end
  local text = f:read(MAX_DOCUMENT + 1) or ""
  f:close()
  if #text > MAX_DOCUMENT then invalid(("uri: %s is larger than %d bytes"):format(path, MAX_DOCUMENT)) end
  return text
end

-- The text the server has for a document: what did-open sent, else the file.
function Server:text_of(path)
  local d = self.docs[path]
  if d then return d.text end
  return read_document(path)
end

-- A length in UTF-16 code units, LSP's default character offsets (bytes
-- for text that is not UTF-8).
local function utf16_len(s)
  local n = utf8.len(s)
  if not n then return #s end
  for _, c in utf8.codes(s) do if c >= 0x10000 then n = n + 1 end end
  return n
end

local function check_position(pos, text, path)
  if type(pos) ~= "table" then invalid("position is required: {line, character}") end
  local line, ch = pos.line, pos.character
  if math.type(line) ~= "integer" and not (type(line) == "number" and line == math.floor(line)) then
    invalid("position.line must be an integer")
  end
  if math.type(ch) ~= "integer" and not (type(ch) == "number" and ch == math.floor(ch)) then
    invalid("position.character must be an integer")
  end
  line, ch = math.tointeger(line), math.tointeger(ch)
  if not line or not ch or line < 0 or ch < 0 then invalid("position: line and character are zero-based") end
  local lines = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l:gsub("\r$", "") end
  if line >= #lines then
    invalid(("position %d:%d is past the end of %s: it has %d line(s), 0 to %d"):format(
      line, ch, path, #lines, #lines - 1))
  end
  local width = utf16_len(lines[line + 1])
  if ch > width then
    invalid(("position %d:%d is past the end of line %d of %s (%d characters)"):format(line, ch, line, path, width))
  end
  return { line = line, character = ch }
end

---------------------------------------------------------------------------
-- Results in the wire's shapes
---------------------------------------------------------------------------

local function position(p)
  p = type(p) == "table" and p or {}
  return { line = math.tointeger(p.line) or 0, character = math.tointeger(p.character) or 0 }
end

local function range(r)
  r = type(r) == "table" and r or {}
  return { start = position(r.start), ["end"] = position(r["end"]) }
end

-- SymbolInformation[] as they are; DocumentSymbol[] (a server that sends
-- the hierarchy anyway) flattened, with the document's uri.
local function symbols(result, uri, out)
  out = out or json.array()
  if type(result) ~= "table" then return out end
  local function add(sym)
    if type(sym) ~= "table" or type(sym.name) ~= "string" then return end
    local loc = sym.location
    if type(loc) == "table" then
      out[#out + 1] = { name = sym.name, kind = math.tointeger(sym.kind) or 0,
                        location = { uri = tostring(loc.uri or uri), range = range(loc.range) } }
    else
      out[#out + 1] = { name = sym.name, kind = math.tointeger(sym.kind) or 0,
                        location = { uri = uri, range = range(sym.range) } }
    end
    if type(sym.children) == "table" then for _, c in ipairs(sym.children) do add(c) end end
  end
  for _, sym in ipairs(result) do add(sym) end
  return out
end

local ITEM_STRINGS = { "detail", "sortText", "filterText", "insertText" }

local function completion_list(result)
  local items, incomplete = result, false
  if type(result) == "table" and result.items ~= nil then
    items, incomplete = result.items, result.isIncomplete == true
  end
  local out = json.array()
  for _, it in ipairs(type(items) == "table" and items or {}) do
    if type(it) == "table" and type(it.label) == "string" then
      local item = { label = it.label, kind = math.tointeger(it.kind) }
      for _, k in ipairs(ITEM_STRINGS) do if type(it[k]) == "string" then item[k] = it[k] end end
      if it.documentation ~= nil and it.documentation ~= json.null then item.documentation = it.documentation end
      out[#out + 1] = item
    end
  end
  return { isIncomplete = incomplete, items = out }
end

---------------------------------------------------------------------------
-- Routes
---------------------------------------------------------------------------

function M.start(ctx)
  local app = ctx.app
  local body = ctx:json_object(true)
  local language_id = common.str(body, "languageId")
  language_of(language_id)
  local project = project_of(app, common.str(body, "pathToProject"))
  local reg, key = registry(app), key_of(language_id, project)
  local s = reg[key]
  while s and s.starting do   -- another start of the same pair: its outcome
    s.event:wait(1)
    s = reg[key]
  end
  if s and not s.dead then return 200 end
  start_server(app, language_id, project)
  return 200
end

function M.stop(ctx)
  local app = ctx.app
  local body = ctx:json_object(true)
  local language_id = common.str(body, "languageId")
  language_of(language_id)
  local path = common.str(body, "pathToProject")
  if not path or path == "" then invalid("pathToProject is required") end
  local project = common.resolve(app, path, "pathToProject")
  local reg, key = registry(app), key_of(language_id, project)
  local s = reg[key]
  if not s then
    raise(400, ("no %s language server is running for %s"):format(language_id, project),
          "LSP_SERVER_NOT_INITIALIZED", DAEMON)
  end
  -- out of the registry first: a start from now on makes a new server
  reg[key] = nil
  s:stop()
  return 200
end

local function document_request(ctx)
  local body = ctx:json_object(true)
  local s = running(ctx.app, common.str(body, "languageId"), common.str(body, "pathToProject"))
  local path = document_path(ctx.app, s.project, common.str(body, "uri"))
  return s, path, body
end

function M.did_open(ctx)
  local s, path = document_request(ctx)
  local text = read_document(path)
  local uri = uri_of(path)
  local d = s.docs[path]
  if d then   -- open again: the file may have changed; the server wants a close first
    s:notify("textDocument/didClose", { textDocument = { uri = uri } })
  end
  s.docs[path] = { text = text, version = d and d.version + 1 or 1 }
  s:notify("textDocument/didOpen", { textDocument = {
    uri = uri, languageId = s.language, version = s.docs[path].version, text = text } })
  return 200
end

function M.did_close(ctx)
  local s, path = document_request(ctx)
  if s.docs[path] then
    s.docs[path] = nil
    s:notify("textDocument/didClose", { textDocument = { uri = uri_of(path) } })
  end
  return 200
end

function M.completions(ctx)
  local s, path, body = document_request(ctx)
  local pos = check_position(body.position, s:text_of(path), path)
  local params = { textDocument = { uri = uri_of(path) }, position = pos }
  local c = body.context
  if type(c) == "table" and math.tointeger(c.triggerKind) then
    params.context = { triggerKind = math.tointeger(c.triggerKind),
                       triggerCharacter = type(c.triggerCharacter) == "string" and c.triggerCharacter or nil }
  end
  return 200, completion_list(s:request("textDocument/completion", params))
end

function M.document_symbols(ctx)
  local q = ctx.query
  local s = running(ctx.app, common.query_required(q, "languageId"), common.query_required(q, "pathToProject"))
  local path = document_path(ctx.app, s.project, common.query_required(q, "uri"))
  if not s.docs[path] then read_document(path) end   -- a clear 404 for a missing file
  local uri = uri_of(path)
  return 200, symbols(s:request("textDocument/documentSymbol", { textDocument = { uri = uri } }), uri)
end

-- The project's files of the server's language, breadth first, bounded.
local function project_files(s)
  local exts = {}
  for _, e in ipairs(s.lang.exts) do exts[e] = true end
  local files, dirs, depth = {}, { s.project }, 0
  while #dirs > 0 and depth <= MAX_DEPTH and #files < MAX_SCAN do
    local next_dirs = {}
    for _, dir in ipairs(dirs) do
      local names = util.readdir(dir) or {}
      table.sort(names)
      for _, name in ipairs(names) do
        if name:sub(1, 1) ~= "." then
          local path = common.join(dir, name)
          local st = util.stat(path, false)
          if st and st.type == "directory" and not SKIP_DIRS[name] then
            next_dirs[#next_dirs + 1] = path
          elseif st and st.type == "file" and exts[name:match("%.([^.]+)$") or ""] and #files < MAX_SCAN then
            files[#files + 1] = path
          end
        end
      end
    end
    dirs, depth = next_dirs, depth + 1
  end
  return files
end

function M.workspace_symbols(ctx)
  local q = ctx.query
  local query = common.query_required(q, "query")
  local s = running(ctx.app, common.query_required(q, "languageId"), common.query_required(q, "pathToProject"))
  if s.caps.workspaceSymbolProvider then
    return 200, symbols(s:request("workspace/symbol", { query = query }), nil)
  end
  local needle, out = query:lower(), json.array()
  for _, path in ipairs(project_files(s)) do
    local uri = uri_of(path)
    local found = symbols(s:request("textDocument/documentSymbol", { textDocument = { uri = uri } }), uri)
    for _, sym in ipairs(found) do
      if sym.name:lower():find(needle, 1, true) then out[#out + 1] = sym end
    end
  end
  return 200, out
end

return M
