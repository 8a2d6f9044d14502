-- code_run's charts: matplotlib figures shown by a Python program come back
-- as artifacts.charts (dtlocal's hook, lua/dtlocal/toolbox/python/), typed
-- and with their PNG; the SDK makes them charts with save_png. Against a
-- private local server, whose sandboxes see Debian's python3-matplotlib.
local errors = require "daytona.errors"
local wire = require "daytona.wire"
local chart = require "daytona.chart"
local helper = require "support.helper"
local fixture = require "sdk.fixture"

local PNG_MAGIC = "\137PNG\r\n\26\n"

describe("daytona.chart and wire.base64_decode", function()
  it("decodes base64, padded or not, and refuses what is not", function()
    local cases = { [""] = "", Zg = "f", ["Zg=="] = "f", ["Zm8="] = "fo", Zm9v = "foo",
                    ["Zm9vYmE="] = "fooba", ["Zm9v\nYmFy"] = "foobar", ["/+8="] = "\255\239" }
    for text, bytes in pairs(cases) do assert.are.equal(bytes, wire.base64_decode(text), text) end
    assert.is_nil(wire.base64_decode("Z"))
    assert.is_nil(wire.base64_decode("Zm9v!"))
    assert.is_nil(wire.base64_decode("Zg==="))
    -- every byte value survives, at every length mod 3 (coreutils' base64 encodes)
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    for _, n in ipairs{ 254, 255, 256 } do
      local path = helper.tmpdir() .. "/bytes"
      local f = assert(io.open(path, "wb"))
      f:write(all:sub(1, n))
      f:close()
      local p = io.popen("base64 -w0 " .. path)
      local b64 = p:read("a")
      p:close()
      assert.are.equal(all:sub(1, n), wire.base64_decode(b64))
    end
  end)

  it("makes charts of decoded tables: methods, element models, a one-line tostring", function()
    local c = chart.new{ type = "bar", title = "T", png = "iVBORw0KGgo=",
                         elements = { { label = "a", group = "", value = "1" } } }
    assert.is_true(chart.is_chart(c))
    assert.are.equal("\137PNG\r\n\26\n", c:png_bytes())
    assert.are.equal('BarChart{elements=[1], png="iVBORw0KGgo=", title="T", type="bar"}', tostring(c))
    assert.matches("^BarData{", tostring(c.elements[1]))
    local keys = {}
    for k in pairs(c) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.are.same({ "elements", "png", "title", "type" }, keys)
    local comp = chart.new{ type = "composite_chart", elements = { { type = "line", elements = {} } } }
    assert.is_true(chart.is_chart(comp.elements[1]))
    assert.matches("^CompositeChart{", tostring(comp))
    local err = fixture.fails(comp.elements[1].save_png, comp.elements[1], os.tmpname())
    assert.is_true(errors.is(err, errors.DaytonaError))
    assert.matches("no PNG", tostring(err))
  end)
end)

describe("code_run charts", function()
  local srv, client, sb

  setup(function()
    srv = fixture.server()
    client, sb = fixture.sandbox(srv, { language = "python" })
  end)

  teardown(function()
    fixture.release(srv, sb)
    helper.cleanup()
  end)

  local function has_matplotlib()
    local r = sb.process:exec("/usr/bin/python3 -c 'import matplotlib'")
    return r.exit_code == 0
  end

  it("returns each kind of chart with its title, elements and PNG, out of result", function()
    assert.is_true(has_matplotlib(), "python3-matplotlib is not installed: run `make deps`")
    local r = sb.process:code_run([==[
import matplotlib.pyplot as plt
print("start")
plt.plot([0, 1, 2], [0, 1, 4], label="squares")
plt.plot([0, 1, 2], [0, 1, 8], label="cubes")
plt.title("Line"); plt.xlabel("x"); plt.ylabel("y")
plt.show()
plt.scatter([1, 2, 3, 4], [4, 3, 2, 1], label="pts"); plt.title("Scatter")
plt.show()
plt.bar(["a", "b", "c"], [3, 1.5, 2]); plt.title("Bar")
plt.show()
plt.pie([1, 1, 2], labels=["x", "y", "z"]); plt.title("Pie")
plt.show()
plt.boxplot([[1, 2, 3, 4, 5, 40], [2, 3, 4]], labels=["A", "B"]); plt.title("Box")
plt.show()
fig, axs = plt.subplots(1, 2)
axs[0].plot([1, 2]); axs[1].bar([1, 2], [3, 4]); fig.suptitle("Both")
plt.show()
print("end")
]==])
    assert.are.equal(0, r.exit_code, r.result)
    assert.are.equal("start\nend\n", r.result)
    assert.are.equal(r.result, r.artifacts.stdout)
    local charts = r.artifacts.charts
    assert.are.equal(6, #charts)
    local got = {}
    for i, c in ipairs(charts) do
      assert.is_true(chart.is_chart(c))
      got[i] = { c.type, c.title, #c.elements }
    end
    assert.are.same({
      { "line", "Line", 2 }, { "scatter", "Scatter", 1 }, { "bar", "Bar", 3 }, { "pie", "Pie", 3 },
      { "box_and_whisker", "Box", 2 }, { "composite_chart", "Both", 2 },
    }, got)

    local line = charts[1]
    assert.are.same({ "x", "y", "linear" }, { line.x_label, line.y_label, line.x_scale })
    assert.are.equal("squares", line.elements[1].label)
    assert.are.same({ { 0, 0 }, { 1, 1 }, { 2, 4 } }, line.elements[1].points)
    assert.is_table(line.x_ticks)
    assert.are.equal(#line.x_ticks, #line.x_tick_labels)

    assert.are.same({ 4, 1 }, charts[2].elements[1].points[4])
    local bar = charts[3]
    assert.are.equal("categorical", bar.x_scale)
    assert.are.same({ label = "b", group = "", value = "1.5" },
      { label = bar.elements[2].label, group = bar.elements[2].group, value = bar.elements[2].value })
    local pie = charts[4]
    assert.are.same({ "z", 180, 1 }, { pie.elements[3].label, math.floor(pie.elements[3].angle + 0.5),
                                       pie.elements[3].radius })
    local box = charts[5].elements[1]
    assert.are.same({ "A", 1, 2.25, 3.5, 4.75, 5, { 40 } },
      { box.label, box.min, box.first_quartile, box.median, box.third_quartile, box.max, box.outliers })
    assert.are.same({}, charts[5].elements[2].outliers)
    local parts = charts[6].elements
    assert.are.same({ "line", "bar" }, { parts[1].type, parts[2].type })
    assert.is_nil(parts[1].png)

    -- every chart carries its figure's picture, which decodes to a PNG
    local dir = helper.tmpdir()
    for i, c in ipairs(charts) do
      local path = ("%s/chart-%d.png"):format(dir, i)
      local n = c:save_png(path)
      local data = helper.read_file(path)
      assert.are.equal(n, #data)
      assert.are.equal(PNG_MAGIC, data:sub(1, 8), "chart " .. i)
      assert.is_true(#data > 1000)
    end
  end)

  it("leaves Python alone when nothing is shown, and honours a backend of the caller's", function()
    local r = sb.process:code_run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nprint('drawn')")
    assert.are.equal("drawn\n", r.result)
    assert.are.same({}, r.artifacts.charts)
    r = sb.process:code_run("import matplotlib\nprint(matplotlib.get_backend())\n"
      .. "import matplotlib.pyplot as plt\nplt.plot([1])\nplt.show()", { env = { MPLBACKEND = "agg" } })
    assert.are.equal(0, r.exit_code, r.result)
    assert.matches("^agg\n", r.result)
    assert.are.same({}, r.artifacts.charts)
  end)
end)
