--- The charts of `code_run`: what matplotlib drew, as plain tables.
--
--     local r = sb.process:code_run([[
--     import matplotlib.pyplot as plt
--     plt.plot([1, 2, 3], [1, 4, 9], label="squares")
--     plt.title("Growth")
--     plt.show()
--     ]])
--     for _, chart in ipairs(r.artifacts.charts) do
--       print(chart.type, chart.title, #chart.elements)  --> line  Growth  1
--       chart:save_png("growth.png")
--     end
--
-- Each figure a Python program shows with `plt.show()` comes back as one
-- chart, with the field names of Python's SDK (the wire's snake_case):
--
-- * `type`: "line", "scatter", "bar", "pie", "box_and_whisker",
--   "composite_chart" (a figure of several axes) or "unknown";
-- * `title`, `png` (the whole figure, base64-encoded PNG);
-- * for an axes: `x_label`, `y_label`, `x_ticks`, `y_ticks` (numbers),
--   `x_tick_labels`, `y_tick_labels`, `x_scale`, `y_scale` ("linear",
--   "log", "categorical", "datetime", ...);
-- * `elements`, by type: line and scatter `{ label, points = { {x, y}, ... } }`;
--   bar `{ label, group, value }` (`value` a string, as the toolbox API has
--   it); pie `{ label, angle, radius }` (degrees); box_and_whisker
--   `{ label, min, first_quartile, median, third_quartile, max, outliers }`;
--   composite_chart: its charts (each without a `png` of its own).
--
-- A field the chart does not have is nil. Charts print as one line, named
-- by Python's class (`BarChart{elements=[3], png="iVBORw0KGgo...", title="Sales", ...}`),
-- like the SDK's other results.
local wire = require "daytona.wire"
local errors = require "daytona.errors"
local check = require "daytona.check"

local type, ipairs, setmetatable, getmetatable, tostring, io = type, ipairs, setmetatable, getmetatable, tostring, io

local M = {}

local Chart = {}
M.Chart = Chart

-- Python's class for each type, the name a chart prints with
local CLASS = {
  line = "LineChart", scatter = "ScatterChart", bar = "BarChart", pie = "PieChart",
  box_and_whisker = "BoxAndWhiskerChart", composite_chart = "CompositeChart",
}
local ELEMENT = {
  line = "PointData", scatter = "PointData", bar = "BarData", pie = "PieData",
  box_and_whisker = "BoxAndWhiskerData",
}

-- one metatable per class name: methods through __index, so that pairs
-- still sees exactly the chart's fields
local mts = {}
local function mt_of(name)
  local mt = mts[name]
  if not mt then
    mt = { __index = Chart, __name = "daytona.Chart", __tostring = function(c) return wire.model_text(c, name) end }
    mts[name] = mt
  end
  return mt
end

--- True if v is a chart (made by `new`).
-- @param v any value
-- @return boolean
function M.is_chart(v)
  local mt = getmetatable(v)
  return mt ~= nil and mt.__index == Chart
end

--- Make a chart of a decoded, snake_case chart table (in place): the chart
-- itself, its elements (models named like Python's, `BarData`...) and, in a
-- composite chart, the charts it holds. SDK code calls it for every chart
-- of a `code_run` response.
-- @param t table
-- @return t, now a chart
function M.new(t)
  if type(t) ~= "table" or getmetatable(t) ~= nil then return t end
  local elements = type(t.elements) == "table" and t.elements or {}
  t.elements = elements
  for i, e in ipairs(elements) do
    if t.type == "composite_chart" then
      elements[i] = M.new(e)
    else
      elements[i] = wire.model(e, ELEMENT[t.type] or "ChartElement")
    end
  end
  return setmetatable(t, mt_of(CLASS[t.type] or "Chart"))
end

--- The chart's picture: the PNG bytes, decoded from `png`.
-- @return string (a PNG file's bytes)
-- @raise DaytonaError when the chart carries no picture (the charts inside
-- a composite chart have none: their figure's picture is the composite's)
-- or `png` is not base64
function Chart:png_bytes()
  if type(self.png) ~= "string" or self.png == "" then
    error(errors.DaytonaError("this chart has no PNG (a chart inside a composite chart shares its picture)",
      { code = "ENOENT" }), 2)
  end
  local bytes, msg = wire.base64_decode(self.png)
  if not bytes then error(errors.DaytonaError("chart png: " .. msg, { code = "EINVAL" }), 2) end
  return bytes
end

--- Write the chart's picture to a local file (replaced if it exists).
-- @param path string, the file to write, e.g. "chart-1.png"
-- @return the number of bytes written
-- @raise DaytonaError when the chart has no PNG (see `png_bytes`) or the
-- file cannot be written; DaytonaValidationError for a bad path
function Chart:save_png(path)
  path = check.string(path, "save_png", "path")
  local bytes = self:png_bytes()
  local f, msg = io.open(path, "wb")
  if not f then error(errors.DaytonaError("save_png: cannot write " .. tostring(msg), { code = "EIO" }), 2) end
  local ok, werr = f:write(bytes)
  local closed, cerr = f:close()
  if not ok or not closed then
    error(errors.DaytonaError("save_png: cannot write " .. path .. ": " .. tostring(werr or cerr),
      { code = "EIO" }), 2)
  end
  return #bytes
end

return M
