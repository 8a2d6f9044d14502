-- examples/lsp.lua: code intelligence from a language server running in a
-- sandbox: the symbols of a file, completions at a cursor, a project-wide
-- symbol search.
--
--     build/bin/dtlua examples/lsp.lua
--
-- The server (pylsp here; typescript-language-server for "typescript" and
-- "javascript") runs inside the sandbox next to the code, so it sees the
-- files as they are there. Positions are zero-based, as in LSP.
local daytona = require "daytona"

local KIND = { [5] = "class", [6] = "method", [8] = "field", [12] = "function", [13] = "variable" }

local client = daytona.new()
local sb <close> = client:create{ labels = { example = "lsp" } }
print(("created sandbox %s"):format(sb.id))

sb.fs:upload_file({ data = [[
class Account:
    def __init__(self, owner):
        self.owner = owner
        self.balance = 0

    def deposit(self, amount):
        self.balance += amount


def open_account(owner):
    return Account(owner)


acct = open_account("ann")
acct.
]] }, "bank/accounts.py")
sb.fs:upload_file({ data = "def account_report(acct):\n    return acct.balance\n" }, "bank/report.py")

-- One server per language and project; the scope's end stops it.
local lsp <close> = sb:create_lsp_server("python", "bank")
lsp:start()
lsp:did_open("accounts.py")   -- relative to the project

print("symbols of accounts.py:")
for _, s in ipairs(lsp:document_symbols("accounts.py")) do
  print(("  %-8s %-12s line %d"):format(KIND[s.kind] or tostring(s.kind), s.name, s.location.range.start.line))
end

-- after `acct.` on line 14: the attributes Account defines come first
local list = lsp:completions("accounts.py", { line = 14, character = 5 })
local names = {}
for _, item in ipairs(list.items) do
  if not item.label:match("^_") then names[#names + 1] = item.label end
end
print("completions after 'acct.': " .. table.concat(names, ", "))

print("symbols matching 'account' in the project:")
for _, s in ipairs(lsp:sandbox_symbols("account")) do
  print(("  %s in %s"):format(s.name, s.location.uri:match("[^/]+$")))
end

-- A position past the end of the file is an error, not an empty list.
local ok, err = pcall(lsp.completions, lsp, "accounts.py", { line = 100, character = 0 })
print(("past the end: %s: %s"):format(tostring(ok), err.message))

lsp:did_close("accounts.py")
print("deleting sandbox")
