#!/usr/bin/env bash
# Serving benchmark of ota-gateway against nginx (the bar), same machine, same run,
# same payload files, wrk on loopback. Prints ratios (gateway / nginx) and the
# gateway's memory while 32 clients download a 1 GiB payload.
#
#   bash ota-gateway/bench/bench.sh            # from the workspace root
#
# Needs: the registry and tools from e2e/scripts/cluster.sh (installed if missing).
# Env: DURATION (wrk seconds, default 10), THREADS (wrk threads, default 2),
#      ROUNDS (default 3: gateway and nginx alternate, the table shows medians),
#      MEMORY=0 to skip the 1 GiB memory run.
#
# It also measures what the device census costs: the same requests carrying a device
# id (a new one on most requests, from a pool of 1,000,000) and the running version,
# to this gateway and to a second one started with --no-census, alternating.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DURATION="${DURATION:-10}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
MEMORY="${MEMORY:-1}"
SIZES="1M 64M"; [ "$MEMORY" = 1 ] && SIZES="$SIZES 1G"
WORK="$(mktemp -d /tmp/updraft-bench.XXXXXX)"
# shellcheck source=lib.sh
source "$ROOT/ota-gateway/bench/lib.sh"
GW_PORT=$(free_port) GW_ADMIN=$(free_port) NGINX_PORT=$(free_port) OFF_PORT=$(free_port) OFF_ADMIN=$(free_port)
say() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
trap "exit 130" INT TERM

say "building the release binary"
(cd "$ROOT" && cargo build --release -q -p ota-gateway)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ota-gateway"

say "starting the registry"
eval "$(bash "$ROOT/e2e/scripts/cluster.sh" registry)"
have_tools() { for tool in oras wrk nginx curl; do command -v "$tool" >/dev/null || return 1; done; }
have_tools || bash "$ROOT/e2e/scripts/cluster.sh" tools
have_tools || { echo "missing one of: oras wrk nginx curl" >&2; exit 1; }

say "pushing payloads: $SIZES"
repo="bench/fw-$$-$(date +%s)"
mkdir -p "$WORK/push"
declare -A DIGEST
for size in $SIZES; do
  head -c "$size" /dev/urandom >"$WORK/push/fw-$size.bin"
  DIGEST[$size]=$(cd "$WORK/push" && oras push --plain-http "$UPDRAFT_REGISTRY/$repo:$size" "fw-$size.bin:application/octet-stream" |
    awk '$1 == "Digest:" {print $2}')
  [ -n "${DIGEST[$size]}" ] || { echo "oras push printed no digest" >&2; exit 1; }
done

cat >"$WORK/gateway.yaml" <<YAML
listen: 127.0.0.1:$GW_PORT
adminListen: 127.0.0.1:$GW_ADMIN
cache: {dir: $WORK/cache, maxBytes: 4294967296}
channels:
$(for size in $SIZES; do
  printf -- '- name: fw-%s\n  source: {registry: "%s", repository: %s, insecure: true}\n  current: {version: 1.0.0, tag: "%s", digest: "%s"}\n' \
    "$size" "$UPDRAFT_REGISTRY" "$repo" "$size" "${DIGEST[$size]}"
done)
YAML

say "starting the gateway"
RUST_LOG=warn "$BIN" --config "$WORK/gateway.yaml" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!; pids+=("$GW_PID")
for size in $SIZES; do
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT/version?device=fw-$size")" = 200 ]; do
    kill -0 "$GW_PID" 2>/dev/null || { cat "$WORK/gateway.log" >&2; exit 1; }
    sleep 0.5
  done
done

say "starting a second gateway with --no-census (1 MiB channel only, its own cache)"
awk -v p="$OFF_PORT" -v a="$OFF_ADMIN" -v w="$WORK" '
  /^listen:/ {print "listen: 127.0.0.1:" p; next}
  /^adminListen:/ {print "adminListen: 127.0.0.1:" a; next}
  /^cache:/ {print "cache: {dir: " w "/cache-off, maxBytes: 4294967296}"; next}
  /^- name:/ {keep = ($3 == "fw-1M")}
  /^(listen|adminListen|cache|channels)/ || keep {print}' "$WORK/gateway.yaml" >"$WORK/gateway-off.yaml"
RUST_LOG=warn "$BIN" --config "$WORK/gateway-off.yaml" --no-census >"$WORK/gateway-off.log" 2>&1 &
OFF_PID=$!; pids+=("$OFF_PID")
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$OFF_PORT/version?device=fw-1M")" = 200 ]; do
  kill -0 "$OFF_PID" 2>/dev/null || { cat "$WORK/gateway-off.log" >&2; exit 1; }
  sleep 0.5
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$OFF_ADMIN/census")" = 404 ] || { echo "--no-census still serves /census" >&2; exit 1; }
# A device id on every request, most of them new, and the version the device runs.
cat >"$WORK/ids.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  local id = (n * 7919 + math.random(0, 999999)) % 1000000
  return wrk.format(nil, wrk.path .. "&id=device-" .. id .. "&current=0.9.0")
end
LUA

say "starting nginx over the gateway's cached payload files"
mkdir -p "$WORK/www" "$WORK/nginx"
for size in $SIZES; do
  sha=$(sha256sum "$WORK/push/fw-$size.bin" | cut -d' ' -f1)
  ln -s "$WORK/cache/blobs/$sha" "$WORK/www/fw-$size.bin"
done
curl -s "http://127.0.0.1:$GW_PORT/version?device=fw-1M" >"$WORK/www/version.txt"
nginx_start "$NGINX_PORT" "$WORK/www" "    location = /version.txt { default_type text/plain; }"
cmp <(curl -s "http://127.0.0.1:$NGINX_PORT/fw-1M.bin") "$WORK/push/fw-1M.bin"
cmp <(curl -s "http://127.0.0.1:$GW_PORT/firmware?device=fw-1M") "$WORK/push/fw-1M.bin"


# Each round runs the gateway then nginx on the same URL set; every sample is kept.
declare -A RESULT
bench() { # name gateway-url nginx-url connections
  say "round $round/$ROUNDS, wrk $1: gateway"
  RESULT[$1-gw]+="$(run_wrk "$2" "$4" "$THREADS")"$'\n'
  say "round $round/$ROUNDS, wrk $1: nginx"
  RESULT[$1-ng]+="$(run_wrk "$3" "$4" "$THREADS")"$'\n'
}
for round in $(seq "$ROUNDS"); do
  bench version "http://127.0.0.1:$GW_PORT/version?device=fw-1M" "http://127.0.0.1:$NGINX_PORT/version.txt" 64
  bench 1MiB "http://127.0.0.1:$GW_PORT/firmware?device=fw-1M" "http://127.0.0.1:$NGINX_PORT/fw-1M.bin" 64
  bench 64MiB "http://127.0.0.1:$GW_PORT/firmware?device=fw-64M" "http://127.0.0.1:$NGINX_PORT/fw-64M.bin" 64
  for what in version firmware; do
    url="/$what?device=fw-1M"
    say "round $round/$ROUNDS, wrk $what with device ids: census on"
    RESULT[census-$what-gw]+="$(run_wrk "http://127.0.0.1:$GW_PORT$url" 64 "$THREADS" "$WORK/ids.lua")"$'\n'
    say "round $round/$ROUNDS, wrk $what with device ids: census off"
    RESULT[census-$what-ng]+="$(run_wrk "http://127.0.0.1:$OFF_PORT$url" 64 "$THREADS" "$WORK/ids.lua")"$'\n'
  done
done
census_series=$(curl -s "http://127.0.0.1:$GW_ADMIN/metrics" | awk '$1 == "updraft_gateway_census_bytes" {print $2}')

max_anon=- max_file=- max_rss=- before_anon=-
if [ "$MEMORY" = 1 ]; then
say "memory while 32 clients download the 1 GiB payload"
status() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$GW_PID/status"; }
before_anon=$(status RssAnon)
dl=()
for _ in $(seq 32); do
  curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/firmware?device=fw-1G" & dl+=("$!")
done
max_anon=0 max_file=0 max_rss=0
while :; do
  running=0
  for p in "${dl[@]}"; do kill -0 "$p" 2>/dev/null && { running=1; break; }; done
  ((running)) || break
  a=$(status RssAnon); f=$(status RssFile); r=$(status VmRSS)
  ((a > max_anon)) && max_anon=$a; ((f > max_file)) && max_file=$f; ((r > max_rss)) && max_rss=$r
  sleep 0.2
done
wait "${dl[@]}" 2>/dev/null || true
fi

echo
echo "| benchmark (wrk -t$THREADS, ${DURATION}s, loopback, median of $ROUNDS) | gateway | nginx | ratio | ratio per round |"
echo "|---|---|---|---|---|"
row() { # label key field(1=req/s,2=bytes/s) unit-divisor unit
  local gw ng per
  gw=$(echo -n "${RESULT[$2-gw]}" | cut -d' ' -f"$3" | median)
  ng=$(echo -n "${RESULT[$2-ng]}" | cut -d' ' -f"$3" | median)
  per=$(paste -d' ' <(echo -n "${RESULT[$2-gw]}" | cut -d' ' -f"$3") <(echo -n "${RESULT[$2-ng]}" | cut -d' ' -f"$3") |
    awk '{printf "%s%.2f", (NR > 1 ? " " : ""), ($2 > 0 ? $1/$2 : 0)}')
  awk -v l="$1" -v g="$gw" -v n="$ng" -v d="$4" -v u="$5" -v p="$per" \
    'BEGIN {printf "| %s | %.0f %s | %.0f %s | %.2fx | %s |\n", l, g/d, u, n/d, u, (n > 0 ? g/n : 0), p}'
}
row "/version, 64 connections (nginx: same body as a static file)" version 1 1 "req/s"
row "/firmware 1 MiB, 64 connections" 1MiB 2 1048576 "MiB/s"
row "/firmware 64 MiB, 64 connections" 64MiB 2 1048576 "MiB/s"
echo
echo "| the census's cost (same requests with ?id=&current=, 64 connections) | census on | census off | on / off | per round |"
echo "|---|---|---|---|---|"
row "/version" census-version 1 1 "req/s"
row "/firmware 1 MiB" census-firmware 2 1048576 "MiB/s"
echo "The census held ${census_series:-?} bytes after the runs."
echo
echo "Gateway memory, 32 concurrent downloads of a 1 GiB payload (peak, /proc/PID/status):"
echo "RssAnon ${max_anon} kB (before: ${before_anon} kB), RssFile ${max_file} kB, VmRSS ${max_rss} kB"
