--- The small projects the language-server specs open: a Python module and
-- a TypeScript one, each ending with a member access to complete
-- (spec/dtlocal/lsp_spec.lua runs them against the daemon on the host,
-- spec/sdk/lsp_spec.lua through the SDK in a sandbox).
local M = {}

M.PY = [[
class Greeter:
    def __init__(self, name):
        self.name = name
        self.greeting_count = 0

    def greet(self):
        return "hi " + self.name


def helper_function(x):
    return x * 2


g = Greeter("a")
g.
]]

M.TS = [[
export class Circle {
  radiusValue: number;
  constructor(r: number) { this.radiusValue = r; }
  area(): number { return Math.PI * this.radiusValue ** 2; }
}

export function makeCircle(r: number): Circle {
  return new Circle(r);
}

const c = makeCircle(1);
c.
]]

--- Symbols by name (document or workspace symbols, a list of {name =, ...}).
function M.by_name(list)
  local t = {}
  for _, s in ipairs(list) do t[s.name] = s end
  return t
end

--- Completion items by label (a completion list, {items = {...}}).
function M.labels(list)
  local t = {}
  for _, it in ipairs(list.items) do t[it.label] = it end
  return t
end

return M
