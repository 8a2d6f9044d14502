-- examples/charts.lua: matplotlib charts from a sandbox, as data and as pictures.
--
--     build/bin/dtlua examples/charts.lua
--
-- Runs a Python program that draws two figures with matplotlib and shows
-- them (`plt.show()`). code_run returns each shown figure as a chart in
-- `artifacts.charts`: its type, title, axis labels and elements (here the
-- bars' values and the lines' points) and the picture, which save_png
-- writes to a local file (chart-1.png, chart-2.png in the current
-- directory). The program's own output stays in `result`.
local daytona = require "daytona"

local client = daytona.new()

-- `<close>` deletes the sandbox when this scope ends, by an error too
local sb <close> = client:create{ language = "python", labels = { example = "charts" } }
print(("created sandbox %s"):format(sb.id))

local r = sb.process:code_run([[
import matplotlib.pyplot as plt

months = ["Jan", "Feb", "Mar", "Apr"]
sales = [120, 135, 90, 160]
plt.bar(months, sales, label="2024")
plt.title("Sales per month")
plt.xlabel("month")
plt.ylabel("units")
plt.show()

fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
left.plot(range(5), [x * x for x in range(5)], label="squares")
left.set_title("Growth")
right.pie([3, 2, 1], labels=["a", "b", "c"])
right.set_title("Share")
fig.suptitle("Two views")
plt.show()

print("total units:", sum(sales))
]])
if r.exit_code ~= 0 then error("the Python program failed:\n" .. r.result) end
print(("code_run: exit %d, result: %s"):format(r.exit_code, (r.result:gsub("%s+$", ""))))
print(("%d charts"):format(#r.artifacts.charts))

for i, chart in ipairs(r.artifacts.charts) do
  print(("chart %d: %s %q, %d element(s)"):format(i, chart.type, chart.title, #chart.elements))
  if chart.type == "bar" then
    print(("  %s by %s:"):format(chart.y_label, chart.x_label))
    for _, bar in ipairs(chart.elements) do
      print(("    %s: %s"):format(bar.label, bar.value))
    end
  elseif chart.type == "composite_chart" then
    -- a figure of several axes: one chart per axes, the picture is the whole figure's
    for _, part in ipairs(chart.elements) do
      print(("  %s %q, %d element(s)"):format(part.type, part.title, #part.elements))
    end
  end
  local file = ("chart-%d.png"):format(i)
  local bytes = chart:save_png(file)
  print(("  saved %s: %d bytes of PNG"):format(file, bytes))
end
