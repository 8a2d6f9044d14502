-- The documentation stays true to the code:
--  * every public function of the SDK and the runtime has an LDoc comment
--    (`--- ...`) right above its definition;
--  * config.ld names files that exist, lists every guide (doc/guides/*.md)
--    as a topic and every example script;
--  * every fenced `lua` block of the guides and of README.md compiles, starts
--    with `local daytona = require "daytona"` when it uses the SDK, and holds
--    each sandbox it creates in a `<close>` variable;
--  * `make docs` (LDoc) renders markdown: no literal ``` in the HTML, no
--    stray tags such as an unescaped `<close>` that a browser would swallow,
--    no emphasis inside names (organization<em>id), and the index lists the public modules under the names users require,
--    and no internal module.
local helper = require "support.helper"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function lines_of(cmd)
  local list = {}
  local p = io.popen(cmd)
  for l in p:lines() do list[#list + 1] = l end
  p:close()
  return list
end

local function lua_files(dir)
  return lines_of("find " .. dir .. " -name '*.lua' | sort")
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

-- config.ld is Lua that sets LDoc's fields; read them the way LDoc does
-- (an environment of its own, nothing else in scope).
local function ldoc_config()
  local env = {}
  local chunk = assert(load(read("config.ld"), "@config.ld", "t", env))
  chunk()
  return env
end

-- The fenced ```lua blocks of a markdown file: { code =, line = } each.
local function lua_blocks(path)
  local blocks, cur = {}, nil
  local n = 0
  for l in io.lines(path) do
    n = n + 1
    if cur then
      if l:match("^```") then
        blocks[#blocks + 1] = cur
        cur = nil
      else
        cur.code[#cur.code + 1] = l
      end
    elseif l:match("^```lua%s*$") then
      cur = { code = {}, line = n + 1 }
    end
  end
  assert(cur == nil, path .. ": a ```lua block is not closed")
  for _, b in ipairs(blocks) do b.code = table.concat(b.code, "\n") .. "\n" end
  return blocks
end

-- What is wrong with one block (nil if nothing): it must compile; if it
-- uses the SDK its first line requires it; every sandbox it creates is a
-- `<close>` variable.
local REQUIRE = 'local daytona = require "daytona"'
local function block_problem(code)
  local fn, err = load(code, "=block", "t")
  if not fn then return "does not compile: " .. err end
  local first = code:match("^%s*([^\n]*)")
  if code:find("daytona[.:]") and first ~= REQUIRE then
    return "uses the SDK but does not start with " .. REQUIRE
  end
  for l in code:gmatch("[^\n]+") do
    if l:match("=%s*[%w_.]*client:create[{(]") and not l:match("<close>") then
      return "a sandbox not held in a <close> variable: " .. l
    end
  end
end

local function check_blocks(path)
  local problems = {}
  for _, b in ipairs(lua_blocks(path)) do
    local p = block_problem(b.code)
    if p then problems[#problems + 1] = ("%s:%d: %s"):format(path, b.line, p) end
  end
  return problems
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

describe("config.ld", function()
  local cfg = ldoc_config()

  it("names source files that exist", function()
    assert.is_true(#cfg.file > 0)
    for _, f in ipairs(cfg.file) do assert.is_true(exists(f), "config.ld names a missing file: " .. f) end
  end)

  it("lists every guide as a topic, and only guides that exist", function()
    local listed = {}
    for _, t in ipairs(cfg.topics) do
      assert.is_true(exists(t), "config.ld names a missing guide: " .. t)
      listed[t] = true
    end
    local guides = lines_of("ls doc/guides/*.md")
    assert.is_true(#guides >= 9, "guides: " .. #guides)
    for _, g in ipairs(guides) do assert.is_true(listed[g], g .. " is not a topic in config.ld") end
  end)

  it("lists every example script", function()
    local listed = {}
    for _, e in ipairs(cfg.examples) do
      assert.is_true(exists(e), "config.ld names a missing example: " .. e)
      listed[e] = true
    end
    for _, e in ipairs(lines_of("find examples -name '*.lua' | sort")) do
      assert.is_true(listed[e], e .. " is not among the examples in config.ld")
    end
  end)
end)

describe("code in the guides and the README", function()
  it("compiles, requires the SDK first and closes what it creates (doc/guides)", function()
    local problems, count = {}, 0
    for _, g in ipairs(lines_of("ls doc/guides/*.md")) do
      count = count + #lua_blocks(g)
      for _, p in ipairs(check_blocks(g)) do problems[#problems + 1] = p end
    end
    assert.is_true(count >= 20, "lua blocks in the guides: " .. count)
    assert.are.same({}, problems)
  end)

  it("compiles, requires the SDK first and closes what it creates (README.md)", function()
    assert.are.same({}, check_blocks("README.md"))
  end)

  it("finds what it should (the checks themselves)", function()
    assert.matches("does not compile", block_problem("local x = = 1"))
    assert.matches("does not start with", block_problem("local sb <close> = daytona.new():create{}"))
    assert.matches("<close>", block_problem(REQUIRE .. "\nlocal client = daytona.new()\nlocal sb = client:create{}"))
    assert.is_nil(block_problem(REQUIRE .. "\nlocal client = daytona.new()\nlocal sb <close> = client:create{}"))
  end)
end)

describe("the rendered reference (make docs)", function()
  local cfg = ldoc_config()
  local out_dir, ldoc_output, ldoc_ok

  -- HTML elements LDoc's template and markdown produce; anything else in
  -- the output is text a browser would take for a tag (`<close>`, `<id>`).
  local TAGS = {}
  for t in ([[a b big blockquote body br code dd div dl dt em h1 h2 h3 h4 h5 h6 head hr html i img
      li link meta ol p pre span strong sub sup table tbody td th thead title tr tt ul]]):gmatch("%S+") do
    TAGS[t] = true
  end

  -- the module names users require: lua/daytona/init.lua is `daytona`
  local function module_name(file)
    return (file:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", "."))
  end

  setup(function()
    out_dir = helper.tmpdir()
    local p = io.popen("ldoc -q -d '" .. out_dir .. "' . 2>&1; echo \"exit $?\"")
    ldoc_output = p:read("a")
    p:close()
    ldoc_ok = ldoc_output:match("exit 0%s*$") ~= nil
  end)

  teardown(function() helper.cleanup() end)

  local function html_files()
    return lines_of("find '" .. out_dir .. "' -name '*.html' | sort")
  end

  it("runs, with a markdown formatter", function()
    assert.is_true(ldoc_ok, ldoc_output)
    assert.is_nil(ldoc_output:find("falling back to text", 1, true),
      "LDoc found no markdown module (make deps installs lua-discount):\n" .. ldoc_output)
  end)

  it("renders markdown: code spans and blocks, no literal ```, no stray tags", function()
    assert.is_true(ldoc_ok, ldoc_output)
    local problems = {}
    local files = html_files()
    assert.is_true(#files > 20, "html files: " .. #files)
    for _, f in ipairs(files) do
      local html = read(f)
      local short = f:sub(#out_dir + 2)
      if html:find("```", 1, true) then problems[#problems + 1] = short .. ": a literal ```" end
      -- `organization_id` taken for emphasis: organization<em>id ...
      local word = html:match("[%w_]*%w</?em>%w[%w_]*")
      if word then problems[#problems + 1] = short .. ": emphasis inside a name: " .. word end
      for tag in html:gmatch("</?([%a][%w]*)") do
        if not TAGS[tag:lower()] then
          problems[#problems + 1] = ("%s: <%s> is not HTML (unescaped text?)"):format(short, tag)
        end
      end
    end
    assert.are.same({}, problems)
    -- markdown really ran: a guide's code block and code spans are HTML
    local guide = read(out_dir .. "/topics/getting_started.md.html")
    assert.matches("<pre>", guide, 1, true)
    assert.matches("<code>", guide, 1, true)
    assert.matches("&lt;close&gt;", guide, 1, true)
  end)

  it("lists the public modules by the names users require, and no internal one", function()
    assert.is_true(ldoc_ok, ldoc_output)
    local index = read(out_dir .. "/index.html")
    local listed = {}
    for name in index:gmatch('href="modules/([^"#]+)%.html"') do listed[name] = true end
    local want = {}
    for _, f in ipairs(cfg.file) do want[module_name(f)] = true end
    assert.are.same(want, listed)
    for _, name in ipairs{ "daytona", "daytona.client", "daytona.sandbox", "daytona.filesystem",
      "daytona.sandbox_process", "daytona.pty", "daytona.git", "daytona.snapshot", "daytona.volume",
      "daytona.image", "daytona.code_interpreter", "daytona.errors", "daytona.runtime.scheduler" } do
      assert.is_true(listed[name], name .. " missing from the index")
    end
    for _, name in ipairs{ "init", "client", "api", "daytona.api", "daytona.transport", "daytona.wire",
      "daytona.check", "daytona.localserver", "daytona.progressbar", "daytona.runtime.http",
      "daytona.runtime.websocket", "daytona.runtime.server", "daytona.runtime.process",
      "daytona.runtime.multipart" } do
      assert.is_nil(listed[name], name .. " is internal but in the index")
    end
    -- internal helpers inside public modules stay out too
    assert.is_nil(read(out_dir .. "/modules/daytona.sandbox_process.html"):find("Demux", 1, true))
  end)

  it("has a page for every guide and every example", function()
    assert.is_true(ldoc_ok, ldoc_output)
    local index = read(out_dir .. "/index.html")
    for _, t in ipairs(cfg.topics) do
      local base = t:match("[^/]+$")
      assert.is_true(exists(out_dir .. "/topics/" .. base .. ".html"), "no page for " .. t)
      assert.matches('href="topics/' .. base:gsub("%p", "%%%0") .. '.html"', index)
    end
    for _, e in ipairs(cfg.examples) do
      local base = e:match("[^/]+$")
      assert.is_true(exists(out_dir .. "/examples/" .. base .. ".html"), "no page for " .. e)
    end
  end)
end)
