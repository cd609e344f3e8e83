#!/usr/bin/env bash
# Benchmark of the artifact store and the forwarder against real peers, same machine,
# same run, ratios only:
#   - store downloads (1 MiB, 1 GiB) against nginx serving the same files (sendfile,
#     open_file_cache), wrk on loopback;
#   - a 1 GiB upload in filuxe's 1 MiB chunks (one curl, keep-alive, Content-Range)
#     against nginx's WebDAV PUT of the same file;
#   - OCI -> OCI of N artifacts (default 200, 1 GiB in all) on the local registry by
#     the mirror worker against `skopeo copy` of the same tags;
#   - the worker's RssAnon while it forwards a 1 GiB file store -> store.
#
#   bash ota-gateway/bench/store-bench.sh        # from the workspace root
#
# Env: DURATION (wrk seconds, default 10), ARTIFACTS (default 200), TOTAL_MB (size of
#      the OCI set, default 1024), ROUNDS (download rounds, default 3; medians shown),
#      UPLOAD_ROUNDS (default 3), SKIP_OCI=1, SKIP_UPLOAD=1, SKIP_DOWNLOAD=1,
#      SKIP_FORWARD=1, GATEWAY_BIN (a built binary to use instead of building), SETTLE
#      (seconds of quiet before each timed upload, default 5).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
ARTIFACTS="${ARTIFACTS:-200}"
TOTAL_MB="${TOTAL_MB:-1024}"
WORK="$(mktemp -d /tmp/updraft-store-bench.XXXXXX)"
# shellcheck source=lib.sh
source "$ROOT/ota-gateway/bench/lib.sh"
say() { printf '\033[1m[store-bench]\033[0m %s\n' "$*" >&2; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
trap "exit 130" INT TERM
KEY=bench-key

gateway_binary
have_tools() { for tool in oras skopeo wrk nginx curl; do command -v "$tool" >/dev/null || return 1; done; }
have_tools || bash "$ROOT/e2e/scripts/cluster.sh" tools
have_tools || { echo "missing one of: oras skopeo wrk nginx curl" >&2; exit 1; }

# gateway NAME: a gateway process serving one store; sets NAME_URL.
gateway() {
  local name=$1 port admin
  port=$(free_port) admin=$(free_port)
  mkdir -p "$WORK/$name"
  cat >"$WORK/$name.yaml" <<YAML
listen: 127.0.0.1:$(free_port)
adminListen: 127.0.0.1:$admin
cache: {dir: $WORK/$name/cache}
stores:
- {name: $name, listen: "127.0.0.1:$port", dir: $WORK/$name/store, writeKey: $KEY, allowPlainWrites: true}
YAML
  RUST_LOG=warn "$BIN" --config "$WORK/$name.yaml" >"$WORK/$name.log" 2>&1 &
  pids+=("$!")
  until curl -sf -o /dev/null "http://127.0.0.1:$port/api/status"; do sleep 0.2; done
  printf -v "${name}_URL" '%s' "http://127.0.0.1:$port"
}
gateway lan
gateway wan

say "files: 1 MiB and 1 GiB"
head -c 1M /dev/urandom >"$WORK/f-1M.bin"
head -c 1G /dev/urandom >"$WORK/f-1G.bin"
for f in f-1M.bin f-1G.bin; do
  curl -sf -X POST -H "key: $KEY" -T "$WORK/$f" "$lan_URL/upload/$f" -o /dev/null
  cmp <(curl -s "$lan_URL/download/$f") "$WORK/$f"
done

NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx" "$WORK/dav"
nginx_start "$NGINX_PORT" "$WORK/lan/store" "    location /dav/ {
      root $WORK;
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 0;
      client_body_buffer_size 1m;
    }"
NGINX="http://127.0.0.1:$NGINX_PORT"

echo "| case | store | peer | ratio (store / peer) |"
echo "|---|---|---|---|"

# wrk URL CONNECTIONS -> bytes/s
run_wrk_bytes() { run_wrk "$1" "$2" | cut -d' ' -f2; }
declare -A RESULT
[ "${SKIP_DOWNLOAD:-0}" = 1 ] && ROUNDS=0
for round in $(seq "$ROUNDS"); do
  for case in "1MiB f-1M.bin 64" "1GiB f-1G.bin 4"; do
    set -- $case
    say "round $round/$ROUNDS, download $1: store, then nginx"
    RESULT[$1-gw]+="$(run_wrk_bytes "$lan_URL/download/$2" "$3")"$'\n'
    RESULT[$1-ng]+="$(run_wrk_bytes "$NGINX/$2" "$3")"$'\n'
  done
done

[ "$ROUNDS" = 0 ] || for c in 1MiB 1GiB; do
  gw=$(printf '%s' "${RESULT[$c-gw]}" | median) ng=$(printf '%s' "${RESULT[$c-ng]}" | median)
  printf '| download %s (MiB/s, median of %s) | %.0f | nginx %.0f | %.2f |\n' "$c" "$ROUNDS" \
    "$(echo "$gw / 1048576" | bc -l)" "$(echo "$ng / 1048576" | bc -l)" "$(echo "$gw / $ng" | bc -l)"
done

up_ratio=- up_gw=- up_ng=-
if [ "${SKIP_UPLOAD:-0}" != 1 ]; then
  say "upload of 1 GiB: filuxe's 1 MiB chunks (one curl, keep-alive) against a WebDAV PUT"
  mkdir -p "$WORK/chunks"
  (cd "$WORK/chunks" && split -b 1M -d -a 5 "$WORK/f-1G.bin" c.)
  size=$(stat -c %s "$WORK/f-1G.bin")
  : >"$WORK/chunks.curl"
  from=0
  for c in "$WORK"/chunks/c.*; do
    n=$(stat -c %s "$c")
    to=$((from + n - 1))
    [ "$from" = 0 ] || echo next >>"$WORK/chunks.curl"
    # upload-file streams each chunk from its file when its request goes out;
    # data-binary would read all 1,024 files into memory before the first request.
    printf 'url = "%s/upload/up.bin?time=1700000000&force=True"\nrequest = POST\nheader = "key: %s"\nheader = "Content-Range: bytes %d-%d/%d"\nupload-file = "%s"\noutput = /dev/null\n' \
      "$lan_URL" "$KEY" "$from" "$to" "$size" "$c" >>"$WORK/chunks.curl"
    from=$((to + 1))
  done
  # Rounds alternate which goes first (the other's dirty pages may still be flushing).
  # The store answers 201 only once the file is on disk (fsync, then rename); nginx's
  # PUT answers with the file in the page cache. So each round also times, outside
  # the ratio, how long nginx's copy takes to reach the disk (`sync -d` right after
  # the PUT), the store taking the file as one POST, and `dd conv=fdatasync` of the
  # same file (the disk's own rate, the floor for any upload that syncs).
  up_gw_all="" up_ng_all="" up_ngsync_all="" up_one_all="" up_dd_all="" up_rounds=""
  secs() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
  # One round first, not counted: the setup above wrote ~3 GiB that the disk may still
  # be absorbing, which slows whatever syncs next.
  say "upload warm-up round (not counted)"
  curl -s -K "$WORK/chunks.curl"
  curl -sf -T "$WORK/f-1G.bin" "$NGINX/dav/up.bin" -o /dev/null
  sync
  for round in $(seq "${UPLOAD_ROUNDS:-3}"); do
    first=store; ((round % 2 == 0)) && first=nginx
    for who in $first $([ $first = store ] && echo nginx || echo store); do
      # Each upload starts on a quiet disk: what the one before wrote (or freed) is
      # synced and given SETTLE seconds to leave the VM's disk.
      sync
      sleep "${SETTLE:-5}"
      if [ "$who" = store ]; then
        up_gw_all+="$(secs curl -s -K "$WORK/chunks.curl")"$'\n'
        cmp <(curl -s "$lan_URL/download/up.bin") "$WORK/f-1G.bin"
        # The store hashes the file after its answer: let that finish before nginx runs.
        until curl -s "$lan_URL/filelist/" | grep -q '"up.bin":{[^}]*"sha256"'; do sleep 0.1; done
      else
        t0=$(date +%s.%N); curl -sf -T "$WORK/f-1G.bin" "$NGINX/dav/up.bin" -o /dev/null; t1=$(date +%s.%N)
        sync -d "$WORK/dav/up.bin"; t2=$(date +%s.%N)
        cmp "$WORK/dav/up.bin" "$WORK/f-1G.bin"
        up_ng_all+="$(echo "$t1 - $t0" | bc -l)"$'\n'
        up_ngsync_all+="$(echo "$t2 - $t0" | bc -l)"$'\n'
      fi
    done
    sync
    up_one_all+="$(secs curl -sf -X POST -H "key: $KEY" -T "$WORK/f-1G.bin" "$lan_URL/upload/one.bin?force=True" -o /dev/null)"$'\n'
    sync
    up_dd_all+="$(secs dd if="$WORK/f-1G.bin" of="$WORK/dd.bin" bs=4M conv=fdatasync status=none)"$'\n'
    rm -f "$WORK/dd.bin"
    gw_s=$(printf '%s' "$up_gw_all" | tail -1) ng_s=$(printf '%s' "$up_ng_all" | tail -1)
    up_rounds+="$(printf '%.2f' "$(echo "$ng_s / $gw_s" | bc -l)") "
    say "upload round $round: store ${gw_s}s, nginx ${ng_s}s ($(printf '%s' "$up_ngsync_all" | tail -1)s to disk)," \
      "store one POST $(printf '%s' "$up_one_all" | tail -1)s, dd+fdatasync $(printf '%s' "$up_dd_all" | tail -1)s," \
      "load $(cut -d' ' -f1-3 /proc/loadavg)"
  done
  up_gw=$(printf '%s' "$up_gw_all" | median) up_ng=$(printf '%s' "$up_ng_all" | median)
  up_ngsync=$(printf '%s' "$up_ngsync_all" | median)
  up_ratio=$(echo "$up_ng / $up_gw" | bc -l)
  rm -rf "$WORK/chunks" "$WORK/dav/up.bin"
  printf '| upload 1 GiB (s, median of %s) | %.2f (1 MiB chunks) | nginx WebDAV PUT %.2f | %.2f (rounds: %s) |\n' \
    "${UPLOAD_ROUNDS:-3}" "$up_gw" "$up_ng" "$up_ratio" "${up_rounds% }"
  printf '| upload 1 GiB until on disk (s, median) | %.2f (1 MiB chunks; 201 after fsync) | nginx PUT + sync -d %.2f | %.2f |\n' \
    "$up_gw" "$up_ngsync" "$(echo "$up_ngsync / $up_gw" | bc -l)"
  printf '| upload 1 GiB as one POST (s, median) | %.2f | dd conv=fdatasync %.2f | %.2f |\n' \
    "$(printf '%s' "$up_one_all" | median)" "$(printf '%s' "$up_dd_all" | median)" \
    "$(echo "$(printf '%s' "$up_dd_all" | median) / $(printf '%s' "$up_one_all" | median)" | bc -l)"
fi

# The worker's admin port, for the store -> store forward and the OCI one (either may
# be skipped).
WORKER_ADMIN=$(free_port)

[ "${SKIP_FORWARD:-0}" = 1 ] || {
say "worker RssAnon while forwarding the 1 GiB file store -> store"
cat >"$WORK/worker-store.yaml" <<YAML
adminListen: 127.0.0.1:$WORKER_ADMIN
mirrors:
- name: big
  source: {http: {url: "$lan_URL"}}
  destination: {http: {url: "$wan_URL", keyFile: $WORK/key, allowPlainHttp: true}}
  include: ["f-1G.bin"]
  interval: 1h
YAML
printf '%s' "$KEY" >"$WORK/key"
RUST_LOG=warn "$BIN" --config "$WORK/worker-store.yaml" --mirror >"$WORK/worker-store.log" 2>&1 &
WPID=$!; pids+=("$WPID")
max_anon=0
t0=$(date +%s.%N)
until curl -s "http://127.0.0.1:$WORKER_ADMIN/mirrors" | grep -q '"pending":0,.*"lastSuccess"\|"lastSuccess".*"pending":0'; do
  a=$(awk '$1 == "RssAnon:" {print $2}' "/proc/$WPID/status" 2>/dev/null || echo 0)
  ((a > max_anon)) && max_anon=$a
  sleep 0.05
done
t1=$(date +%s.%N)
cmp <(curl -s "$wan_URL/download/f-1G.bin") "$WORK/f-1G.bin"
store_copy_s=$(echo "$t1 - $t0" | bc -l)
kill "$WPID"
printf '| worker forwarding 1 GiB store->store | %.2f s | RssAnon max %s kB | |\n' "$store_copy_s" "$max_anon"
}

oci_ratio=- oci_gw=- oci_sk=-
if [ "${SKIP_OCI:-0}" != 1 ]; then
  eval "$(bash "$ROOT/e2e/scripts/cluster.sh" registry)"
  REG=$UPDRAFT_REGISTRY
  base="bench/oci-$$-$(date +%s)"
  each_kb=$((TOTAL_MB * 1024 / ARTIFACTS))
  say "pushing $ARTIFACTS artifacts of $each_kb KiB to $REG/$base/src"
  mkdir -p "$WORK/oci"
  for i in $(seq "$ARTIFACTS"); do
    head -c "${each_kb}K" /dev/urandom >"$WORK/oci/a.bin"
    (cd "$WORK/oci" && oras push --plain-http "$REG/$base/src:v1.0.$i" a.bin:application/octet-stream >/dev/null)
  done
  say "skopeo copy of every tag to $base/skopeo"
  t0=$(date +%s.%N)
  for i in $(seq "$ARTIFACTS"); do
    skopeo copy -q --all --src-tls-verify=false --dest-tls-verify=false \
      "docker://$REG/$base/src:v1.0.$i" "docker://$REG/$base/skopeo:v1.0.$i"
  done
  t1=$(date +%s.%N)
  say "the mirror worker to $base/mirror"
  cat >"$WORK/worker-oci.yaml" <<YAML
adminListen: 127.0.0.1:$WORKER_ADMIN
mirrors:
- name: oci
  source: {oci: {registry: "$REG", repository: $base/src, insecure: true}}
  destination: {oci: {registry: "$REG", repository: $base/mirror, insecure: true}}
  interval: 1h
YAML
  t2=$(date +%s.%N)
  RUST_LOG=warn "$BIN" --config "$WORK/worker-oci.yaml" --mirror >"$WORK/worker-oci.log" 2>&1 &
  WPID=$!; pids+=("$WPID")
  until curl -s "http://127.0.0.1:$WORKER_ADMIN/mirrors" | grep -q "\"inSync\":$ARTIFACTS,"; do
    kill -0 "$WPID" 2>/dev/null || { cat "$WORK/worker-oci.log" >&2; exit 1; }
    sleep 0.1
  done
  t3=$(date +%s.%N)
  kill "$WPID"
  for i in 1 "$ARTIFACTS"; do
    [ "$(oras resolve --plain-http "$REG/$base/src:v1.0.$i")" = "$(oras resolve --plain-http "$REG/$base/mirror:v1.0.$i")" ]
  done
  oci_sk=$(echo "$t1 - $t0" | bc -l) oci_gw=$(echo "$t3 - $t2" | bc -l)
  oci_ratio=$(echo "$oci_sk / $oci_gw" | bc -l)
  printf '| OCI->OCI %s artifacts, %s MiB (s) | %.2f | skopeo copy %.2f | %.2f |\n' "$ARTIFACTS" "$TOTAL_MB" "$oci_gw" "$oci_sk" "$oci_ratio"
fi
