-- Rollout agreement (scaleout.sh): asks one gateway, for every id FIRST..LAST in order,
-- `/version?device=fw&id=dev-N` and the check API (as a device on 0.9.0), one
-- connection per wrk thread so answers arrive in the order asked, and writes one line per
-- id: `N <status> <body>|<status> <body>` (newlines as `;`) to OUT.<thread>. The ids
-- are split between the threads. A thread that asked every id of its share stops and
-- creates OUT.<thread>.done; wrk itself runs for its whole -d, so the caller ends it
-- (SIGINT) once every thread is done.
--   wrk -tT -cT -d600s -s ids.lua URL -- FIRST LAST OUT T
local started = 0
local first, last, out

-- Runs in wrk's main Lua state, once per thread, before that thread's init.
function setup(thread)
  started = started + 1
  thread:set("index", started)
end

local i, phase, version_answer, file
function init(args)
  local a, b = tonumber(args[1]), tonumber(args[2])
  -- `index` and the number of threads: this thread's share of the ids.
  local count = tonumber(args[4] or "1")
  local index = tonumber(wrk.thread:get("index"))
  local per = math.ceil((b - a + 1) / count)
  first = a + (index - 1) * per
  last = math.min(b, first + per - 1)
  out = args[3] .. "." .. index
  file = io.open(out, "w")
  i, phase = first, 0
end

function request()
  if phase == 0 then
    return wrk.format("GET", "/version?device=fw&id=dev-" .. i)
  end
  return wrk.format("POST", "/api/v1/channels/fw/check", { ["Content-Type"] = "application/json" },
    '{"version":"0.9.0","id":"dev-' .. i .. '"}')
end

function response(status, headers, body)
  if i > last then
    return
  end
  local answer = status .. " " .. body:gsub("\n", ";")
  if phase == 0 then
    version_answer, phase = answer, 1
    return
  end
  file:write(i, " ", version_answer, "|", answer, "\n")
  i, phase = i + 1, 0
  if i > last then
    file:close()
    io.open(out .. ".done", "w"):close()
    wrk.thread:stop()
  end
end

