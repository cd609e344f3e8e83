-- A simulated fleet for wrk (scaleout.sh): devices with ids from a pool of FLEET
-- (default 100,000) poll `/version?device=fw&id=ID` (OtaFlux style) and the check API
-- (`POST /api/v1/channels/fw/check` with the version they run), alternately. One id in
-- 100 runs the previous release (STALE): its check answers 200 with the release and its
-- URL, and the thread's next request downloads it (downloads on update; the device is
-- not remembered, so it downloads again at its next check: 1 request in 200 is a
-- download); every other device runs CURRENT and is up to date (204). Meant for a
-- channel at 100 % rollout. Headers given with -H (e.g. `Connection: close`, a new TLS
-- connection per poll) are kept on every request.
local pool = tonumber(os.getenv("FLEET") or "100000")
local current = os.getenv("CURRENT") or "2.0.0"
local stale = os.getenv("STALE") or "1.0.0"
local n = 0
local downloads = {}
local get, post = {}, {}

function init(args)
  math.randomseed(os.time() * 1000 + math.floor(os.clock() * 1e6))
  for k, v in pairs(wrk.headers) do
    get[k] = v
    post[k] = v
  end
  post["Content-Type"] = "application/json"
end

function request()
  local url = table.remove(downloads)
  if url then
    return wrk.format("GET", url, get)
  end
  n = n + 1
  local i = math.random(pool)
  if n % 2 == 0 then
    return wrk.format("GET", "/version?device=fw&id=dev-" .. i, get)
  end
  local running = (i % 100 == 0) and stale or current
  return wrk.format("POST", "/api/v1/channels/fw/check", post,
    '{"version":"' .. running .. '","id":"dev-' .. i .. '"}')
end

function response(status, headers, body)
  -- Only a check that offers an update answers 200 with JSON.
  if status == 200 and body:sub(1, 1) == "{" then
    local url = body:match('"url"%s*:%s*"([^"]+)"')
    if url then
      table.insert(downloads, url)
    end
  end
end
