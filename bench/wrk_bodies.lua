-- wrk script: POST one pre-built body per request, never reusing one.
--   wrk ... -s bench/wrk_bodies.lua URL -- <bodies file> <wrk thread count> <cycle: 0|1> [bodies|requests] [<expect>]
-- The bodies file has one urlencoded form body per line. With "requests", each line is a whole
-- request instead: METHOD <TAB> PATH <TAB> BODY <TAB> Header: value <TAB> ... (DPoP proofs and RFC
-- 9421 signatures differ per request, so their headers travel with each line; bench/pop_issuance.py).
-- Thread i of n takes lines i, i+n, ...
-- so no two threads ever send the same body. With cycle=0 a thread that runs out sends
-- "/__bench_bodies_exhausted" (a 404, counted as an error and reported): the run is then invalid
-- and the caller must pre-build more bodies. cycle=1 (only for do-nothing baselines) wraps around.
-- With <expect>, a 200 answer whose body does not contain that string (e.g. '"access_token":"ey')
-- counts as non-200 too: a 200 carrying an error or an empty body is not a success.
-- done() prints one line "BENCH {json}" that bench/benchlib.py parses.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local function prepared(line)
  local p = {}
  for field in string.gmatch(line .. "\t", "([^\t]*)\t") do
    p[#p + 1] = field
  end
  local headers = {}
  for k = 4, #p do
    local name, value = string.match(p[k], "^([^:]+): (.*)$")
    if name then headers[name] = value end
  end
  if p[3] ~= "" then headers["Content-Type"] = "application/x-www-form-urlencoded" end
  return wrk.format(p[1], p[2], headers, p[3] ~= "" and p[3] or nil)
end

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  cycle = args[3] == "1"
  whole = args[4] == "requests"
  expect = args[5]
  if expect == "" then expect = nil end
  bodies = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == tid then
      bodies[#bodies + 1] = whole and prepared(line) or line
    end
    i = i + 1
  end
  sent = 0
  non200 = 0
  exhausted = 0
  first_bad = ""
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  sent = sent + 1
  local body
  if cycle then
    body = bodies[(sent - 1) % #bodies + 1]
  else
    body = bodies[sent]
  end
  if body == nil then
    exhausted = exhausted + 1
    return wrk.format("POST", "/__bench_bodies_exhausted", nil, "")
  end
  if whole then
    return body
  end
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status == 200 and expect and not string.find(body or "", expect, 1, true) then
    status = 0
  end
  if status ~= 200 then
    non200 = non200 + 1
    if first_bad == "" then
      first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 200)
    end
  end
end

local function esc(s)
  return (string.gsub(s, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end))
end

function done(summary, latency, requests)
  local non200_total, exhausted_total, bad = 0, 0, ""
  for _, t in ipairs(threads) do
    non200_total = non200_total + t:get("non200")
    exhausted_total = exhausted_total + t:get("exhausted")
    if bad == "" then bad = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"non200":%d,"exhausted":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d,"first_bad":"%s"}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    non200_total, exhausted_total, e.connect, e.read, e.write, e.timeout, e.status, esc(bad)))
end
