--- The results: one table printed, written as Markdown and as JSON.
--
-- A row is `{ name, metric, unit, dtlua, ts_sdk, curl }` (nil where a column
-- does not apply), plus `better` ("higher" or "lower": which way is good,
-- for the ratios) and `note`. Ratios are dtlua's figure over the other
-- client's, for every row, whichever way is good.
local M = {}

---------------------------------------------------------------------------
-- JSON (keys in a given order, so the file reads well and diffs cleanly)
---------------------------------------------------------------------------

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
  ["\r"] = "\\r", ["\t"] = "\\t" }

local function jstring(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESC[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local NULL = setmetatable({}, { __tostring = function() return "null" end })
M.null = NULL

-- An ordered object: { __keys = { k1, k2, ... }, k1 = v1, ... }
function M.object(keys, values)
  values.__keys = keys
  return values
end

local function encode(v, indent)
  local t = type(v)
  if v == nil or v == NULL then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if math.type(v) == "integer" then return tostring(v) end
    return (("%.4f"):format(v):gsub("0+$", ""):gsub("%.$", ""))
  end
  if t == "string" then return jstring(v) end
  assert(t == "table", "cannot encode a " .. t)
  local pad, pad2 = ("  "):rep(indent), ("  "):rep(indent + 1)
  if v.__keys then
    local parts = {}
    for _, k in ipairs(v.__keys) do
      parts[#parts + 1] = pad2 .. jstring(k) .. ": " .. encode(v[k], indent + 1)
    end
    if #parts == 0 then return "{}" end
    return "{\n" .. table.concat(parts, ",\n") .. "\n" .. pad .. "}"
  end
  if #v > 0 or next(v) == nil then
    local parts = {}
    for i = 1, #v do parts[i] = pad2 .. encode(v[i], indent + 1) end
    if #parts == 0 then return "[]" end
    return "[\n" .. table.concat(parts, ",\n") .. "\n" .. pad .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = pad2 .. jstring(k) .. ": " .. encode(v[k], indent + 1) end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. pad .. "}"
end

function M.json(v)
  return encode(v, 0) .. "\n"
end

---------------------------------------------------------------------------
-- formatting
---------------------------------------------------------------------------

-- a figure with about three significant digits
local function fmt(v)
  if v == nil then return "–" end
  local a = math.abs(v)
  if a >= 100 then return ("%.0f"):format(v) end
  if a >= 10 then return ("%.1f"):format(v) end
  if a >= 1 then return ("%.2f"):format(v) end
  return ("%.3f"):format(v)
end
M.fmt = fmt

local function ratio(a, b)
  if a == nil or b == nil or b == 0 then return nil end
  return a / b
end

local function fmt_ratio(r)
  if r == nil then return "–" end
  return ("%.2f×"):format(r)
end

local HEAD = { "scenario", "metric", "unit", "dtlua", "TS SDK", "curl", "dtlua/TS", "dtlua/curl" }

local function cells(row)
  return { row.name, row.metric, row.unit, fmt(row.dtlua), fmt(row.ts_sdk), fmt(row.curl),
    fmt_ratio(ratio(row.dtlua, row.ts_sdk)), fmt_ratio(ratio(row.dtlua, row.curl)) }
end

local function width(s)
  return utf8.len(s) or #s
end

--- The table as aligned text (for the terminal).
function M.text(rows)
  local all = { HEAD }
  for _, r in ipairs(rows) do all[#all + 1] = cells(r) end
  local w = {}
  for _, c in ipairs(all) do
    for i, s in ipairs(c) do w[i] = math.max(w[i] or 0, width(s)) end
  end
  local out = {}
  for n, c in ipairs(all) do
    local line = {}
    for i, s in ipairs(c) do
      local padn = w[i] - width(s)
      -- names left, figures right
      line[i] = i <= 3 and s .. (" "):rep(padn) or (" "):rep(padn) .. s
    end
    out[#out + 1] = table.concat(line, "  ")
    if n == 1 then
      local rule = {}
      for i = 1, #w do rule[i] = ("-"):rep(w[i]) end
      out[#out + 1] = table.concat(rule, "  ")
    end
  end
  return table.concat(out, "\n") .. "\n"
end

--- The table as Markdown.
function M.markdown_table(rows)
  local out = { "| " .. table.concat(HEAD, " | ") .. " |",
    "|" .. ("---|"):rep(3) .. ("---:|"):rep(#HEAD - 3) }
  local last
  for _, r in ipairs(rows) do
    local c = cells(r)
    if c[1] == last then c[1] = "" else last = c[1] end
    out[#out + 1] = "| " .. table.concat(c, " | ") .. " |"
  end
  return table.concat(out, "\n") .. "\n"
end

--- The JSON document: `{ machine, date, mode, scenarios = [ { name, metric,
-- unit, dtlua, ts_sdk, curl } ], targets, notes }`.
function M.document(meta, rows, targets, notes)
  local scen = {}
  for i, r in ipairs(rows) do
    scen[i] = M.object({ "name", "metric", "unit", "dtlua", "ts_sdk", "curl" }, {
      name = r.name, metric = r.metric, unit = r.unit,
      dtlua = r.dtlua or NULL, ts_sdk = r.ts_sdk or NULL, curl = r.curl or NULL,
    })
  end
  local tg = {}
  for i, t in ipairs(targets) do
    tg[i] = M.object({ "target", "value", "met" }, { target = t.text, value = t.value, met = t.met })
  end
  return M.object({ "machine", "date", "mode", "scenarios", "targets", "notes" }, {
    machine = meta.machine, date = meta.date, mode = meta.mode, scenarios = scen, targets = tg, notes = notes,
  })
end

return M
