-- Every public function of the SDK and the runtime is documented: an LDoc
-- comment (`--- ...`) right above its definition. `make docs` turns these
-- into the API reference (doc/api/).
local function lua_files(dir)
  local list = {}
  local p = io.popen("find " .. dir .. " -name '*.lua' | sort")
  for f in p:lines() do list[#list + 1] = f end
  p:close()
  return list
end

local function undocumented(path)
  local missing = {}
  local lines = {}
  for l in io.lines(path) do lines[#lines + 1] = l end
  for i, l in ipairs(lines) do
    -- public: `function Mod.name(` / `function Class:name(` / `Mod.name = function(`
    local name = l:match("^function%s+([%w_]+[.:][%w_]+)%s*%(")
      or l:match("^([%w_]+%.[%w_]+)%s*=%s*function%s*%(")
    local short = name and name:match("[.:]([%w_]+)$")
    if name and not short:match("^_") then
      -- walk up over the comment block directly above
      local j, documented = i - 1, false
      while j >= 1 and lines[j]:match("^%s*%-%-") do
        if lines[j]:match("^%s*%-%-%-") then documented = true end
        j = j - 1
      end
      if not documented then missing[#missing + 1] = ("%s:%d %s"):format(path, i, name) end
    end
  end
  return missing
end

describe("API documentation", function()
  it("documents every public function in lua/daytona", function()
    local missing = {}
    for _, f in ipairs(lua_files("lua/daytona")) do
      for _, m in ipairs(undocumented(f)) do missing[#missing + 1] = m end
    end
    assert.are.same({}, missing)
  end)
end)
