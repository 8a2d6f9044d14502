--- Language servers in a sandbox: symbols and completions from a real
-- language server (pylsp for Python, typescript-language-server for
-- TypeScript and JavaScript) running next to the code.
--
--     local lsp <close> = sb:create_lsp_server("python", "project")
--     lsp:start()
--     lsp:did_open("project/app.py")
--     for _, s in ipairs(lsp:document_symbols("project/app.py")) do
--       print(s.kind, s.name, s.location.range.start.line)
--     end
--     local list = lsp:completions("project/app.py", { line = 10, character = 4 })
--     for _, item in ipairs(list.items) do print(item.label, item.detail) end
--     print(#lsp:sandbox_symbols("Greeter"))
--   -- the scope's end stops the server (lsp:stop() does it earlier)
--
-- The methods are Python's `LspServer`'s (doc/protocol.md §4.8). A `path` is
-- sent as the document URI `file://` + path, as every official SDK sends it:
-- give an absolute path, or one relative to the project (`path_to_project`
-- itself is relative to the sandbox's working directory unless absolute).
-- Results are plain tables with Python's field names: a symbol is
-- `{ name, kind, location = { uri, range = { start = { line, character },
-- ["end"] = { line, character } } } }` (`kind` is LSP's SymbolKind: 5 class,
-- 6 method, 12 function, 13 variable, ...), a completion list
-- `{ is_incomplete, items = { { label, kind, detail, documentation,
-- sort_text, filter_text, insert_text }, ... } }`. Positions are zero-based.
--
-- Errors: a language the sandbox has no server for, a position past the end
-- of the document, or a call before `start` (or after the server exited)
-- raise `DaytonaValidationError`; a project or file that is not in the
-- sandbox `DaytonaNotFoundError`; a server that cannot start `DaytonaError`.
-- A server that exited is started afresh by `start`.
local check = require "daytona.check"
local wire = require "daytona.wire"
local errors = require "daytona.errors"

local setmetatable, ipairs, pcall, error, tostring, io =
  setmetatable, ipairs, pcall, error, tostring, io

local M = {}

local LspServer = {}
LspServer.__index = LspServer
LspServer.__name = "daytona.lsp_server.LspServer"
M.LspServer = LspServer

--- A language server object for a sandbox (made by
-- `Sandbox:create_lsp_server`; nothing starts until `start`).
-- @param sb Sandbox
-- @param language_id "python", "typescript" or "javascript"
-- @param path_to_project the project's directory in the sandbox
-- @return LspServer
-- @raise DaytonaValidationError for an argument that is no string
function M.new(sb, language_id, path_to_project)
  language_id = check.string(language_id, "create_lsp_server", "language_id")
  path_to_project = check.string(path_to_project, "create_lsp_server", "path_to_project")
  return setmetatable({ _sb = sb, language_id = language_id, path_to_project = path_to_project }, LspServer)
end

local function call(self, opts)
  return self._sb:toolbox(opts)
end

local function server_body(self)
  return { languageId = self.language_id, pathToProject = self.path_to_project }
end

local function document_body(self, path, f)
  path = check.string(path, f, "path")
  return { languageId = self.language_id, pathToProject = self.path_to_project, uri = "file://" .. path }
end

-- A list of LspSymbol tables from the wire's array.
local function symbol_list(r)
  local out = {}
  for i, s in ipairs(type(r) == "table" and r or {}) do out[i] = wire.to_lua(s, "LspSymbol") end
  return out
end

--- Start the language server (the first call for this language and
-- project starts it; later ones, from any client, reuse it).
-- @return nothing
-- @raise DaytonaValidationError for an unknown language,
--   DaytonaNotFoundError when the project directory is not in the sandbox,
--   DaytonaError when the server cannot start
function LspServer:start()
  call(self, { method = "POST", path = "/lsp/start", json = server_body(self), idempotent = true,
               what = "start LSP server" })
  self._running = true
end

--- Stop the language server and everything it started.
-- @return nothing
-- @raise DaytonaValidationError when no server runs for this language and
--   project
function LspServer:stop()
  self._running = false
  call(self, { method = "POST", path = "/lsp/stop", json = server_body(self), what = "stop LSP server" })
end

--- Tell the server a file is open: it reads the file's current text, and
-- completions and symbols for it follow that text (open it again after
-- changing the file).
-- @param path the file in the sandbox (absolute, or relative to the project)
-- @return nothing
-- @raise DaytonaNotFoundError when the file does not exist
function LspServer:did_open(path)
  call(self, { method = "POST", path = "/lsp/did-open", json = document_body(self, path, "did_open"),
               idempotent = true, what = "open file" })
end

--- Tell the server a file is closed.
-- @param path the file in the sandbox
-- @return nothing
function LspServer:did_close(path)
  call(self, { method = "POST", path = "/lsp/did-close", json = document_body(self, path, "did_close"),
               idempotent = true, what = "close file" })
end

--- The symbols (classes, functions, variables, ...) of a file.
-- @param path the file in the sandbox
-- @return a list of `{ name, kind, location = { uri, range } }`
-- @raise DaytonaNotFoundError when the file does not exist
function LspServer:document_symbols(path)
  local q = document_body(self, path, "document_symbols")
  return symbol_list(call(self, { method = "GET", path = "/lsp/document-symbols",
    query = { languageId = q.languageId, pathToProject = q.pathToProject, uri = q.uri },
    what = "get symbols from document" }))
end

--- The symbols of the whole project whose names match `query`.
-- @param query part of a name (not empty)
-- @return a list of `{ name, kind, location = { uri, range } }`
function LspServer:sandbox_symbols(query)
  query = check.string(query, "sandbox_symbols", "query")
  return symbol_list(call(self, { method = "GET", path = "/lsp/workspacesymbols",
    query = { languageId = self.language_id, pathToProject = self.path_to_project, query = query },
    what = "get symbols from sandbox" }))
end

--- Deprecated name of `sandbox_symbols` (as in Python and TypeScript).
-- @param query part of a name
-- @return a list of symbols
function LspServer:workspace_symbols(query)
  return self:sandbox_symbols(query)
end

--- Completions at a position of a file.
-- @param path the file in the sandbox
-- @param position `{ line = , character = }`, zero-based
-- @return `{ is_incomplete = bool, items = { { label, kind, detail,
--   documentation, sort_text, filter_text, insert_text }, ... } }`
-- @raise DaytonaValidationError for a position past the end of the file
function LspServer:completions(path, position)
  local f = "completions"
  local body = document_body(self, path, f)
  position = check.table(position, f, "position")
  body.position = {
    line = check.integer(position.line, f, "position.line", 0),
    character = check.integer(position.character, f, "position.character", 0),
  }
  local r = wire.to_lua(call(self, { method = "POST", path = "/lsp/completions", json = body,
    idempotent = true, what = "get completions" }) or {}, "CompletionList")
  local items = {}
  for i, it in ipairs(r.items or {}) do items[i] = wire.model(it, "CompletionItem") end
  r.items = items
  r.is_incomplete = r.is_incomplete == true
  return r
end

--- `local lsp <close> = sb:create_lsp_server(...)`: the scope's end stops
-- a server this object started. When the scope ends by an error, a failure
-- to stop is reported on stderr and the original error goes on.
-- @local
function LspServer:__close(err)
  if not self._running then return end
  local ok, e = pcall(self.stop, self)
  if ok then return end
  -- a server that exited, or was stopped through another object, is gone
  -- already: nothing is left to stop
  if errors.is(e, errors.DaytonaValidationError) then return end
  if err ~= nil then
    io.stderr:write("daytona: could not stop the ", self.language_id, " language server: ", tostring(e), "\n")
  else
    error(e, 0)
  end
end

function LspServer:__tostring()
  return ("LspServer{language_id=%q, path_to_project=%q}"):format(self.language_id, self.path_to_project)
end

check.methods(LspServer, "lsp")

return M
