#!/usr/bin/env bash
# Replicas serving one fleet, measured (issue 22; the report is SCALE.md). Three
# ota-gateway replicas (the release binary) on one config, as a Deployment runs them: each
# its own cache (a pod's emptyDir), one store directory shared by the three (the
# ReadWriteMany volume); Debian's nginx as the Service (L4 round robin per connection,
# as kube-proxy spreads connections); the real registry (`cluster.sh registry`), which
# each replica reaches through its own nginx port so the access log counts its pulls;
# mosquitto as the broker. Prints, as `FIGURE` lines:
#
#   1. registry pulls per release per replica (start, then a new release);
#   2. MQTT publishes per release across the replicas (mosquitto_sub counts them);
#   3. the fleet: requests/s and CPU time per request per replica (from
#      /proc/PID/stat utime+stime deltas), for devices on keep-alive HTTP, for devices
#      opening a new TLS connection per poll, and for both at once;
#   4. TLS handshakes per second per core (per server CPU-second), gateway vs nginx
#      with the same certificate, full handshakes (`openssl s_time -new`) and resumed
#      ones (`-reuse`), TLS 1.2 and 1.3;
#   5. rollout agreement over IDS ids (default 100,000): every replica asked the same
#      ids over /version and the check API, before and after a rollout step applied to
#      all, and while it lands;
#   6. filuxe's client (its requests, Python float times) through nginx, so chunks land
#      on different replicas: lost files;
#   7. the extrapolation to 1 M and 10 M devices polling every 5 minutes.
#
#   bash e2e/scripts/scaleout.sh          # from the workspace root
#
# Env: DURATION (seconds per wrk/s_time run, default 15), IDS (default 100000), FLEET
#      (device ids the fleet draws from, default 100000), CONNS (wrk connections per
#      fleet half, default 32), FILES (filuxe uploads, default 1000), GATEWAY_BIN (use
#      this binary instead of building the release one), KEEP=1 (keep the scratch dir).
# Needs: `cluster.sh tools` (wrk, nginx, mosquitto, oras, the clients venv) and Debian's
# libnginx-mod-stream for the L4 balancer (installed here when missing).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/e2e/scripts/scaleout"
DURATION="${DURATION:-15}"
IDS="${IDS:-100000}"
export FLEET="${FLEET:-100000}"
CONNS="${CONNS:-32}"
FILES="${FILES:-1000}"
WORK="$(mktemp -d /tmp/updraft-scaleout.XXXXXX)"
# shellcheck source=../../ota-gateway/bench/lib.sh
source "$ROOT/ota-gateway/bench/lib.sh"
say() { printf '\033[1m[scaleout]\033[0m %s\n' "$*" >&2; }
figure() { echo "FIGURE $*"; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap "exit 130" INT TERM
TICK=$(getconf CLK_TCK)
REPLICAS=3

gateway_binary
eval "$(bash "$ROOT/e2e/scripts/cluster.sh" registry)"
have_tools() { for t in oras wrk nginx mosquitto mosquitto_sub openssl curl; do command -v "$t" >/dev/null || return 1; done; }
have_tools || bash "$ROOT/e2e/scripts/cluster.sh" tools
have_tools || { echo "missing one of: oras wrk nginx mosquitto mosquitto_sub openssl curl" >&2; exit 1; }
PYTHON="${UPDRAFT_CACHE:-$HOME/.cache/updraft}/clients-venv/bin/python"
[ -x "$PYTHON" ] || { echo "$PYTHON is missing: run cluster.sh tools" >&2; exit 1; }
STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
if [ ! -e "$STREAM_MODULE" ]; then
  say "installing libnginx-mod-stream (nginx's L4 balancer, the Service's stand-in)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libnginx-mod-stream >/dev/null
fi

# --- the registry: three releases of a 1 MiB firmware -----------------------------
repo="scaleout/fw-$$-$(date +%s)"
mkdir -p "$WORK/push"
declare -A DIGEST LAYER
for v in 1.0.0 2.0.0 3.0.0; do
  head -c 1048576 /dev/urandom >"$WORK/push/fw-$v.bin"
  LAYER[$v]="sha256:$(sha256sum "$WORK/push/fw-$v.bin" | cut -d' ' -f1)"
  DIGEST[$v]=$(cd "$WORK/push" && oras push --plain-http "$UPDRAFT_REGISTRY/$repo:$v" \
    "fw-$v.bin:application/vnd.updraft.firmware.v1" | awk '$1 == "Digest:" {print $2}')
  [ -n "${DIGEST[$v]}" ] || { echo "oras push printed no digest" >&2; exit 1; }
done
say "pushed 1.0.0, 2.0.0, 3.0.0 to $UPDRAFT_REGISTRY/$repo"

# --- one certificate for the gateways and nginx ------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=gateway \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null

# --- mosquitto, and a subscriber counting what it is sent ---------------------------
MQTT_PORT=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$MQTT_PORT" >"$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
pids+=($!)
until mosquitto_sub -p "$MQTT_PORT" -t '$SYS/broker/version' -C 1 -W 1 >/dev/null 2>&1; do sleep 0.2; done
# Subscribed before the gateways start: each publish the broker takes is delivered once.
mosquitto_sub -p "$MQTT_PORT" -q 1 -t 'scaleout/#' -F '%t %p' >"$WORK/mqtt.log" 2>&1 &
pids+=($!)
sleep 0.5

# --- ports, configs ---------------------------------------------------------------
for i in 0 1 2; do
  PORT[i]=$(free_port) ADMIN[i]=$(free_port) TLS[i]=$(free_port) STORE[i]=$(free_port) PULLS[i]=$(free_port)
done
LB_HTTP=$(free_port) LB_HTTPS=$(free_port) LB_STORE=$(free_port) NGINX_TLS=$(free_port)
mkdir -p "$WORK/volume/files"
# write_config I CURRENT PREVIOUS ROLLOUT: replica I's gateway.yaml, written whole and
# renamed (as kubelet swaps a ConfigMap). The three differ only in their listeners,
# their cache and the nginx port they pull through.
write_config() {
  local i=$1 cur=$2 prev=$3 rollout=$4
  cat >"$WORK/gateway-$i.yaml.tmp" <<YAML
listen: 127.0.0.1:${PORT[i]}
adminListen: 127.0.0.1:${ADMIN[i]}
cache: {dir: $WORK/cache-$i}
tls: {listen: '127.0.0.1:${TLS[i]}', certFile: $WORK/tls.crt, keyFile: $WORK/tls.key}
notifications:
  mqtt: {url: 'mqtt://127.0.0.1:$MQTT_PORT', topicPrefix: scaleout}
stores:
- {name: files, listen: '127.0.0.1:${STORE[i]}', dir: $WORK/volume/files, writeKey: scaleout-key}
channels:
- name: fw
  source: {registry: "127.0.0.1:${PULLS[i]}", repository: $repo, insecure: true}
  current: {version: $cur, tag: "$cur", digest: "${DIGEST[$cur]}"}
  previous: {version: $prev, tag: "$prev", digest: "${DIGEST[$prev]}"}
  rollout: $rollout
YAML
  mv "$WORK/gateway-$i.yaml.tmp" "$WORK/gateway-$i.yaml"
}

# --- nginx: the Service (L4), the store's balancer (logs which replica took a chunk),
# the registry's counting ports, and the TLS peer with the gateways' certificate.
mkdir -p "$WORK/nginx" "$WORK/www"
printf '2.0.0\n123456789\n1048576' >"$WORK/www/version"
servers() { local p; for p in "$@"; do printf '    server 127.0.0.1:%s;\n' "$p"; done; }
cat >"$WORK/nginx/nginx.conf" <<CONF
load_module $STREAM_MODULE;
user $(id -un);
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
stream {
  upstream gw_http {
$(servers "${PORT[@]}")
  }
  upstream gw_https {
$(servers "${TLS[@]}")
  }
  server { listen 127.0.0.1:$LB_HTTP; proxy_pass gw_http; }
  server { listen 127.0.0.1:$LB_HTTPS; proxy_pass gw_https; }
}
http {
  access_log off;
  client_max_body_size 0;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx; fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  log_format pulls '\$server_port \$request_method \$uri \$status';
  log_format chunks '\$request_uri \$http_content_range \$upstream_addr';
  upstream stores {
$(servers "${STORE[@]}")
  }
  server {
    listen 127.0.0.1:$LB_STORE;
    access_log $WORK/nginx/store.log chunks;
    # The store speaks HTTPS beside the gateway's TLS listener (writes only over TLS).
    location / { proxy_pass https://stores; proxy_request_buffering off; }
  }
  server {
$(for p in "${PULLS[@]}"; do printf '    listen 127.0.0.1:%s;\n' "$p"; done)
    access_log $WORK/nginx/registry.log pulls;
    location / { proxy_pass http://$UPDRAFT_REGISTRY; proxy_set_header Host \$http_host; proxy_buffering off; }
  }
  server {
    listen 127.0.0.1:$NGINX_TLS ssl;
    ssl_certificate $WORK/tls.crt;
    ssl_certificate_key $WORK/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    keepalive_requests 1000000;
    root $WORK/www;
  }
}
CONF
nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
pids+=("$NGINX_PID")
until [ -s "$WORK/nginx/nginx.pid" ]; do
  kill -0 "$NGINX_PID" 2>/dev/null || { cat "$WORK/nginx/error.log" >&2; exit 1; }
  sleep 0.2
done

# --- the replicas ------------------------------------------------------------------
for i in 0 1 2; do
  write_config "$i" 2.0.0 1.0.0 50
  RUST_LOG=warn "$BIN" --config "$WORK/gateway-$i.yaml" >"$WORK/gateway-$i.log" 2>&1 &
  GW[i]=$!
  pids+=("${GW[i]}")
done
# served I VERSION: whether replica I has VERSION fetched, verified and ready.
served() { [ "$(curl -s -o /dev/null -w '%{http_code}' -I "http://127.0.0.1:${PORT[$1]}/api/v1/channels/fw/firmware?version=$2")" = 200 ]; }
for i in 0 1 2; do
  for v in 1.0.0 2.0.0; do
    until served "$i" "$v"; do
      kill -0 "${GW[i]}" 2>/dev/null || { cat "$WORK/gateway-$i.log" >&2; exit 1; }
      sleep 0.2
    done
  done
done
say "3 replicas serving 2.0.0 (50 %) and 1.0.0; load average $(load1)"

# --- helpers ----------------------------------------------------------------------
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
requests_served() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^updraft_gateway_http_requests_total/ {s += $NF} END {printf "%d\n", s}'; }
applied() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^updraft_gateway_config_reloads_total\{result="applied"\}/ {print $NF + 0; f = 1} END {if (!f) print 0}'; }
nginx_pids() { echo "$NGINX_PID" $(pgrep -P "$NGINX_PID"); }
# pulls LAYER: "n0 n1 n2", the blob GETs answered 200 through each replica's port.
pulls() {
  local i out=""
  for i in 0 1 2; do
    out+="$(awk -v p="${PULLS[i]}" -v l="$1" '$1 == p && $2 == "GET" && $4 == 200 && $3 ~ ("/blobs/" l "$") {n++} END {print n + 0}' "$WORK/nginx/registry.log") "
  done
  echo "${out% }"
}
mqtt_count() { grep -c "^scaleout/fw " "$WORK/mqtt.log" || true; }
# reload_all CURRENT PREVIOUS ROLLOUT: writes every replica's config, waits until each applied it.
reload_all() {
  local i before=()
  for i in 0 1 2; do before[i]=$(applied "${ADMIN[i]}"); done
  for i in 0 1 2; do write_config "$i" "$@"; done
  for i in 0 1 2; do
    until [ "$(applied "${ADMIN[i]}")" -gt "${before[i]}" ]; do sleep 0.1; done
  done
}

# --- 1, 2: registry pulls and MQTT publishes per release ------------------------------
sleep 2
figure "registry-pulls start: 1.0.0 layer $(pulls "${LAYER[1.0.0]}"), 2.0.0 layer $(pulls "${LAYER[2.0.0]}") blob GETs through replicas 0 1 2"
mqtt_start=$(mqtt_count)
reload_all 3.0.0 2.0.0 50
for i in 0 1 2; do until served "$i" 3.0.0; do sleep 0.2; done; done
sleep 3
mqtt_release=$(($(mqtt_count) - mqtt_start))
figure "registry-pulls release 3.0.0: $(pulls "${LAYER[3.0.0]}") blob GETs through replicas 0 1 2 (2.0.0 since start: $(pulls "${LAYER[2.0.0]}"))"
figure "mqtt: $mqtt_start publishes on scaleout/fw at start, $mqtt_release for release 3.0.0, from $REPLICAS replicas ($((mqtt_release - 1)) duplicates of the same retained payload); distinct payloads for 3.0.0: $(grep '^scaleout/fw ' "$WORK/mqtt.log" | tail -n "$mqtt_release" | sort -u | wc -l)"
reload_all 2.0.0 1.0.0 50

# --- 3: the fleet (at 100 %: every device's check is 204 but for the stale ones) --------
reload_all 2.0.0 1.0.0 100
# fleet NAME RUNS...: each run is "SCHEME HEADER"; runs together; prints per replica.
fleet() {
  local name=$1; shift
  local i t0=() r0=() wpids=() n=0 run
  for i in 0 1 2; do t0[i]=$(cpu_ticks "${GW[i]}"); r0[i]=$(requests_served "${ADMIN[i]}"); done
  local ng0; ng0=$(cpu_ticks $(nginx_pids))
  local start; start=$(date +%s.%N)
  for run in "$@"; do
    n=$((n + 1))
    case $run in
      keepalive) wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$HERE/fleet.lua" "http://127.0.0.1:$LB_HTTP" >"$WORK/wrk-$name-$n.txt" & ;;
      newtls) wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$HERE/fleet.lua" -H 'Connection: close' "https://localhost:$LB_HTTPS" >"$WORK/wrk-$name-$n.txt" & ;;
    esac
    wpids+=($!)
  done
  wait "${wpids[@]}"
  local secs; secs=$(echo "$(date +%s.%N) - $start" | bc -l)
  local total_req=0 total_cpu=0 line=""
  for i in 0 1 2; do
    local dt=$(($(cpu_ticks "${GW[i]}") - t0[i])) dr=$(($(requests_served "${ADMIN[i]}") - r0[i]))
    total_req=$((total_req + dr)) total_cpu=$((total_cpu + dt))
    line+=$(awk -v r="$dr" -v t="$dt" -v s="$secs" -v k="$TICK" -v i="$i" \
      'BEGIN {printf " replica%d %.0f req/s %.0f us CPU/req;", i, r / s, (r ? t / k / r * 1e6 : 0)}')
  done
  local ng=$(($(cpu_ticks $(nginx_pids)) - ng0))
  local errors; errors=$(cat "$WORK"/wrk-"$name"-*.txt | awk '/Non-2xx|Socket errors/' | tr '\n' ' ')
  figure "fleet $name ($*; $CONNS connections each, ${DURATION}s, load average $(load1)):$line total $(awk -v r="$total_req" -v s="$secs" 'BEGIN {printf "%.0f", r / s}') req/s, $(awk -v r="$total_req" -v t="$total_cpu" -v k="$TICK" 'BEGIN {printf "%.0f", t / k / r * 1e6}') us gateway CPU/req (nginx L4 $(awk -v r="$total_req" -v t="$ng" -v k="$TICK" 'BEGIN {printf "%.0f", t / k / r * 1e6}') us/req) ${errors:-no errors}"
  echo "$name $total_req $total_cpu" >>"$WORK/fleet.txt"
}
say "fleet: keep-alive HTTP"
fleet keepalive keepalive
say "fleet: a new TLS connection per poll"
fleet newtls newtls
say "fleet: half and half"
fleet mixed keepalive newtls
cpu_us() { awk -v n="$1" -v k="$TICK" '$1 == n {printf "%.0f", $3 / k / $2 * 1e6}' "$WORK/fleet.txt"; }
KEEPALIVE_US=$(cpu_us keepalive) NEWTLS_US=$(cpu_us newtls)

# --- 4: TLS handshakes per server CPU-second, gateway vs nginx ----------------------------
# s_time PORT FLAGS...: handshakes per second of the server's CPU (its pids in SERVER).
s_time() {
  local port=$1; shift
  local t0; t0=$(cpu_ticks $SERVER)
  local out; out=$(openssl s_time -connect "localhost:$port" -www "/version?device=fw" -time "$DURATION" "$@" 2>&1 </dev/null | grep 'connections in .* real seconds' | tail -1)
  local dt=$(($(cpu_ticks $SERVER) - t0)) n; n=$(echo "$out" | awk '{print $1}')
  awk -v n="${n:-0}" -v t="$dt" -v k="$TICK" -v d="$DURATION" 'BEGIN {printf "%.0f/s per core (%d in %ds, server CPU %.2fs)", (t ? n / (t / k) : 0), n, d, t / k}'
}
declare -A HS
for proto in tls1_2 tls1_3; do
  for mode in new reuse; do
    SERVER="${GW[0]}"; HS[gw-$proto-$mode]=$(s_time "${TLS[0]}" -"$proto" -"$mode")
    SERVER="$(nginx_pids)"; HS[nginx-$proto-$mode]=$(s_time "$NGINX_TLS" -"$proto" -"$mode")
    figure "tls-handshakes $proto -$mode: gateway ${HS[gw-$proto-$mode]}; nginx ${HS[nginx-$proto-$mode]}"
  done
done

# --- 5: rollout agreement -----------------------------------------------------------------
# answers TAG FIRST LAST: every replica's answers for the ids, in $WORK/ids-TAG-I.
answers() {
  local tag=$1 first=$2 last=$3 i wp=()
  for i in 0 1 2; do
    wrk -t2 -c2 -d3600s -s "$HERE/ids.lua" "http://127.0.0.1:${PORT[i]}" -- "$first" "$last" "$WORK/ids-$tag-$i" 2 >/dev/null &
    wp+=($!)
  done
  # wrk runs for its whole -d: end each once both its threads wrote their share.
  for i in 0 1 2; do
    until [ -e "$WORK/ids-$tag-$i.1.done" ] && [ -e "$WORK/ids-$tag-$i.2.done" ]; do
      kill -0 "${wp[i]}" 2>/dev/null || { echo "wrk (ids, replica $i) ended early" >&2; exit 1; }
      sleep 0.2
    done
    kill -INT "${wp[i]}"
  done
  wait "${wp[@]}" || true
  for i in 0 1 2; do sort -n "$WORK/ids-$tag-$i".[12] >"$WORK/ids-$tag-$i"; rm -f "$WORK/ids-$tag-$i".[12]*; done
}
# disagreements TAG: ids whose answers differ between replicas (and ids missing).
disagreements() {
  local tag=$1
  local n0; n0=$(wc -l <"$WORK/ids-$tag-0")
  [ "$n0" = "$IDS" ] || { echo "replica 0 answered $n0 of $IDS ids" >&2; }
  echo $(( $(cat "$WORK/ids-$tag-0" "$WORK/ids-$tag-1" "$WORK/ids-$tag-2" | sort | uniq -c | awk '$1 != 3' | wc -l) ))
}
on_current() { awk -v v="$2" '$2 == 200 && index($3, v ";") == 1 {n++} END {printf "%.1f", n * 100 / NR}' "$WORK/ids-$1-0"; }
reload_all 2.0.0 1.0.0 50
say "rollout agreement: $IDS ids on every replica at 50 %"
answers r50 0 $((IDS - 1))
figure "rollout-agreement 50 %: $IDS ids x 3 replicas x (/version + check): $(disagreements r50) disagreements, $(on_current r50 2.0.0) % on 2.0.0"
say "rollout step 50 % -> 80 % on every replica, polling while it lands"
answers_during() { answers during 0 $((IDS / 5 - 1)); }
answers_during &
during_pid=$!
sleep 0.3
reload_all 2.0.0 1.0.0 80
wait "$during_pid"
answers r80 0 $((IDS - 1))
left=$(awk 'NR == FNR {old[$1] = $2 " " $3; next} old[$1] ~ /^200 2\.0\.0;/ && ($2 " " $3) !~ /^200 2\.0\.0;/' \
  "$WORK/ids-r50-0" "$WORK/ids-r80-0" | wc -l)
neither=0
for i in 0 1 2; do
  # Each request on its own: the step may land between an id's two requests.
  neither=$((neither + $(awk 'FNR == 1 {f++} {id = $1; split($0, h, "|")}
    f == 1 {ov[id] = h[1]; oc[id] = h[2]; next} f == 2 {nv[id] = h[1]; nc[id] = h[2]; next}
    {bad += (h[1] != ov[id] && h[1] != nv[id]) + (h[2] != oc[id] && h[2] != nc[id])} END {print bad + 0}' \
    "$WORK/ids-r50-0" "$WORK/ids-r80-0" "$WORK/ids-during-$i")))
done
figure "rollout-agreement 80 %: $(disagreements r80) disagreements, $(on_current r80 2.0.0) % on 2.0.0, $left ids left 2.0.0; while the step landed $((2 * 3 * IDS / 5)) answers, $neither neither the old nor the new one of their id"

# --- 6: filuxe's client through nginx --------------------------------------------------------
say "filuxe's client: $FILES files through nginx over the 3 replicas"
filuxe=$("$PYTHON" "$ROOT/ota-gateway/tests/filuxe/filuxe_upload.py" "http://127.0.0.1:$LB_STORE" scaleout-key \
  "$WORK/filuxe" "$FILES" "$((FILES / 25))" 2>"$WORK/filuxe.err") || { cat "$WORK/filuxe.err" >&2; }
split=$(awk '$1 ~ /^\/upload\// && $2 == "bytes" {split($1, u, "?"); key = $1; n[key]++; if (!(key in first)) first[key] = $4; else if ($4 != first[key]) s[key] = 1}
  END {m = 0; for (k in n) if (n[k] > 1) m++; printf "%d of %d", length(s), m}' "$WORK/nginx/store.log")
figure "chunked-across-replicas: several-chunk uploads split across replicas: $split; $filuxe"

# --- 7: extrapolation ----------------------------------------------------------------------
# Half the devices keep a connection, half open a new TLS connection per poll: half the
# requests cost the keep-alive figure, half the new-TLS one. A replica is one core kept at
# 60 % busy. Per-request CPU figures are of this run (see SCALE.md).
for rate in 3333 33333; do
  figure "extrapolation $rate req/s: $(awk -v r="$rate" -v k="$KEEPALIVE_US" -v n="$NEWTLS_US" 'BEGIN {
    m = (k + n) / 2; c = r * m / 1e6
    printf "%.2f cores of gateway CPU at %d us/req (half %d us keep-alive, half %d us new TLS) = %d replicas of 1 core at 60 %%; all keep-alive %.2f cores, all new TLS %.2f",
      c, m, k, n, int(c / 0.6) + 1, r * k / 1e6, r * n / 1e6 }')"
done
say "done (load average $(load1))"
