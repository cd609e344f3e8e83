#!/usr/bin/env bash
# Benchmark of the simplestreams surface (#10) against real peers, same machine, same
# run, ratios per round:
#   - serving a stream's images.json with VERSIONS versions in PRODUCTS products, and
#     a ROOTFS_MB rootfs of it: the gateway against nginx serving the same bytes
#     (wrk on loopback; rounds alternate gateway and nginx);
#   - the gateway's RssAnon with that index loaded while 32 clients download the rootfs;
#   - index build for VERSIONS/PRODUCTS (full, then one version more) against Incus's
#     own `incus-simplestreams add`, which rewrites the whole index on every add
#     (PEER_ADDS adds timed).
#
# The big stream is an upstream source: a static simplestreams tree served by nginx
# with VERSIONS versions whose files exist (small files shared between versions, one
# ROOTFS_MB rootfs in the newest version of the first product). The gateway mirrors it
# and serves its own images.json (its paths, its ETag/gzip path).
#
#   bash ota-gateway/bench/streams-bench.sh        # from the workspace root
#
# Env: DURATION (wrk seconds, default 10), ROUNDS (default 3), VERSIONS (10000),
#      PRODUCTS (500), ROOTFS_MB (64), PEER_ADDS (1000; 0 skips the peer),
#      BUILD_ROUNDS (index build runs, default 3), GATEWAY_BIN (a built binary to use).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
VERSIONS="${VERSIONS:-10000}"
PRODUCTS="${PRODUCTS:-500}"
ROOTFS_MB="${ROOTFS_MB:-64}"
PEER_ADDS="${PEER_ADDS:-1000}"
BUILD_ROUNDS="${BUILD_ROUNDS:-3}"
WORK="$(mktemp -d /tmp/updraft-streams-bench.XXXXXX)"
say() { printf '\033[1m[streams-bench]\033[0m %s\n' "$*" >&2; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
trap "exit 130" INT TERM
# shellcheck source=lib.sh
source "$ROOT/ota-gateway/bench/lib.sh"

gateway_binary
have_tools() { for tool in wrk nginx curl python3 mksquashfs; do command -v "$tool" >/dev/null || return 1; done; }
have_tools || bash "$ROOT/e2e/scripts/cluster.sh" tools
have_tools || { echo "missing one of: wrk nginx curl python3 mksquashfs" >&2; exit 1; }
echo "Started $(date -u '+%F %H:%M') UTC, commit $(git -C "$ROOT" rev-parse --short HEAD), load $(load1)"

say "upstream tree: $VERSIONS versions in $PRODUCTS products, one $ROOTFS_MB MiB rootfs"
mkdir -p "$WORK/upstream/files"
head -c "${ROOTFS_MB}M" /dev/urandom >"$WORK/upstream/files/big.squashfs"
python3 - "$WORK/upstream" "$VERSIONS" "$PRODUCTS" <<'PY'
import hashlib, json, os, sys
root, versions, products = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
files = os.path.join(root, "files")
def put(name, data):
    with open(os.path.join(files, name), "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest(), len(data)
def digest(name):
    h = hashlib.sha256()
    with open(os.path.join(files, name), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest(), os.path.getsize(os.path.join(files, name))
def combined(*names):
    h = hashlib.sha256()
    for n in names:
        with open(os.path.join(files, n), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
meta = put("meta.tar.xz", b"metadata " * 100)
small = put("small.squashfs", os.urandom(4096))
big = digest("big.squashfs")
per = versions // products
out = {}
for p in range(products):
    vs = {}
    for v in range(per):
        day = 1 + v
        serial = f"2026{1 + day // 28:02d}{1 + day % 28:02d}_00:00"
        root_name, (root_sha, root_size) = ("big.squashfs", big) if (p == 0 and v == per - 1) else ("small.squashfs", small)
        vs[serial] = {"items": {
            "lxd.tar.xz": {"ftype": "lxd.tar.xz", "path": "files/meta.tar.xz", "sha256": meta[0], "size": meta[1],
                           "combined_squashfs_sha256": combined("meta.tar.xz", root_name)},
            "root.squashfs": {"ftype": "squashfs", "path": f"files/{root_name}", "sha256": root_sha, "size": root_size},
        }}
    out[f"bench:r{p}:amd64:default"] = {"aliases": f"bench/r{p}", "arch": "amd64", "os": "Bench", "release": f"r{p}",
                                        "release_title": f"r{p}", "variant": "default", "versions": vs}
os.makedirs(os.path.join(root, "streams/v1"), exist_ok=True)
with open(os.path.join(root, "streams/v1/images.json"), "w") as f:
    json.dump({"content_id": "images", "datatype": "image-downloads", "format": "products:1.0", "products": out}, f)
with open(os.path.join(root, "streams/v1/index.json"), "w") as f:
    json.dump({"format": "index:1.0", "index": {"images": {"datatype": "image-downloads", "path": "streams/v1/images.json",
               "format": "products:1.0", "products": sorted(out)}}}, f)
PY

NGINX_PORT=$(free_port)
mkdir -p "$WORK/www"
# nginx serves the upstream tree under /up/ and, for the comparison, the gateway's own
# images.json and the same rootfs bytes at /images.json and /rootfs.squashfs.
nginx_start "$NGINX_PORT" "$WORK/www" "    location /up/ { alias $WORK/upstream/; }"
NGINX="http://127.0.0.1:$NGINX_PORT"

GW_PORT=$(free_port) GW_ADMIN=$(free_port)
cat >"$WORK/gateway.yaml" <<YAML
listen: 127.0.0.1:$GW_PORT
adminListen: 127.0.0.1:$GW_ADMIN
cache: {dir: $WORK/cache, maxBytes: 4294967296}
streams:
- name: big
  source:
    upstream: {url: "$NGINX/up", interval: 1h}
YAML
say "starting the gateway (upstream stream of $VERSIONS versions)"
t0=$(date +%s.%N)
RUST_LOG=warn "$BIN" --config "$WORK/gateway.yaml" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!; pids+=("$GW_PID")
GW="http://127.0.0.1:$GW_PORT/streams/big"
count_versions() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(len(p["versions"]) for p in d["products"].values()))'; }
until [ "$(curl -s "$GW/streams/v1/images.json" | count_versions 2>/dev/null)" = "$VERSIONS" ]; do
  kill -0 "$GW_PID" 2>/dev/null || { cat "$WORK/gateway.log" >&2; exit 1; }
  sleep 0.2
done
t1=$(date +%s.%N)
say "the gateway lists $VERSIONS versions after $(printf '%.2f' "$(echo "$t1 - $t0" | bc -l)") s (start, upstream read, index)"
curl -s -o "$WORK/www/images.json" "$GW/streams/v1/images.json"
rootfs_path=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d["products"]["bench:r0:amd64:default"]["versions"]; print(v[max(v)]["items"]["root.squashfs"]["path"])' "$WORK/www/images.json")
cp "$WORK/upstream/files/big.squashfs" "$WORK/www/rootfs.squashfs"
# The first request fetches, verifies and caches the rootfs; from then on it is served.
cmp <(curl -s "$GW/$rootfs_path") "$WORK/www/rootfs.squashfs"
cmp <(curl -s "$NGINX/images.json") "$WORK/www/images.json"
images_bytes=$(stat -c %s "$WORK/www/images.json")
say "images.json: $images_bytes bytes; rootfs at /streams/big/$rootfs_path"

declare -A RESULT
bench() { # name gateway-url nginx-url connections
  say "round $round/$ROUNDS, wrk $1: gateway then nginx (load $(load1))"
  RESULT[$1-gw]+="$(run_wrk "$2" "$4")"$'\n'
  RESULT[$1-ng]+="$(run_wrk "$3" "$4")"$'\n'
  RESULT[$1-load]+="$(load1) "
}
for round in $(seq "$ROUNDS"); do
  bench images "$GW/streams/v1/images.json" "$NGINX/images.json" 16
  bench rootfs "$GW/$rootfs_path" "$NGINX/rootfs.squashfs" 16
done

say "RssAnon with the index loaded while 32 clients download the rootfs"
status() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$GW_PID/status"; }
before_anon=$(status RssAnon)
wrk -t2 -c32 -d"${DURATION}s" "$GW/$rootfs_path" >/dev/null &
WRK=$!
max_anon=0
while kill -0 "$WRK" 2>/dev/null; do
  a=$(status RssAnon); ((a > max_anon)) && max_anon=$a
  sleep 0.1
done
mem_load=$(load1)
echo
echo "| benchmark (wrk -t2, ${DURATION}s, loopback, median of $ROUNDS) | gateway | nginx | ratio | ratio per round | load per round |"
echo "|---|---|---|---|---|---|"
row() { # label key field(1=req/s,2=bytes/s) divisor unit
  local gw ng per
  gw=$(echo -n "${RESULT[$2-gw]}" | cut -d' ' -f"$3" | median)
  ng=$(echo -n "${RESULT[$2-ng]}" | cut -d' ' -f"$3" | median)
  per=$(paste -d' ' <(echo -n "${RESULT[$2-gw]}" | cut -d' ' -f"$3") <(echo -n "${RESULT[$2-ng]}" | cut -d' ' -f"$3") |
    awk '{printf "%s%.2f", (NR > 1 ? " " : ""), ($2 > 0 ? $1/$2 : 0)}')
  awk -v l="$1" -v g="$gw" -v n="$ng" -v d="$4" -v u="$5" -v p="$per" -v ld="${RESULT[$2-load]% }" \
    'BEGIN {printf "| %s | %.1f %s | %.1f %s | %.2fx | %s | %s |\n", l, g/d, u, n/d, u, (n > 0 ? g/n : 0), p, ld}'
}
row "images.json ($VERSIONS versions, $images_bytes bytes), 16 connections" images 1 1 "req/s"
row "rootfs $ROOTFS_MB MiB, 16 connections" rootfs 2 1048576 "MiB/s"
echo
echo "Gateway RssAnon with the $VERSIONS-version index loaded: ${before_anon} kB idle, peak ${max_anon} kB while 32 clients downloaded the ${ROOTFS_MB} MiB rootfs for ${DURATION} s (load ${mem_load})."

say "index build: $VERSIONS versions / $PRODUCTS products (release test build of the index module)"
build_lines=""
# Built once, then run: the test binary's path from cargo's JSON messages.
test_bin=$(cd "$ROOT" && cargo test --release -q -p ota-gateway --lib --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "ota_gateway":
        print(m["executable"])' | tail -1)
for _ in $(seq "$BUILD_ROUNDS"); do
  line=$([ -n "$test_bin" ] && "$test_bin" simplestreams::index::tests::ten_thousand_versions --exact --nocapture 2>/dev/null |
    grep '10,000 versions' || true)
  build_lines+="${line:-not measured: the release test build or run failed} (load $(load1))"$'\n'
done

peer_s=- peer_last=-
if [ "$PEER_ADDS" -gt 0 ]; then
  PEER="$HOME/.cache/updraft/bin/incus-simplestreams"
  [ -x "$PEER" ] || PEER=$(command -v incus-simplestreams || true)
  [ -n "$PEER" ] || bash "$ROOT/e2e/scripts/cluster.sh" tools
  [ -x "$PEER" ] || PEER="$HOME/.cache/updraft/bin/incus-simplestreams"
  say "peer: $PEER_ADDS images for incus-simplestreams add (prepared first, not timed)"
  mkdir -p "$WORK/peer/img" "$WORK/peer/tree"
  for i in $(seq 0 $((PEER_ADDS - 1))); do
    d="$WORK/peer/img/$i"; mkdir -p "$d"
    printf 'architecture: x86_64\ncreation_date: %d\nproperties:\n  architecture: amd64\n  os: Bench\n  release: r%d\n  variant: default\n  description: bench %d\ntemplates: {}\n' \
      $((1767225600 + i * 3600)) $((i % 50)) "$i" >"$d/metadata.yaml"
    tar -C "$d" --owner=0 --group=0 -cJf "$d/incus.tar.xz" metadata.yaml
    mkdir -p "$d/rootdir/etc"; printf 'bench %d\n' "$i" >"$d/rootdir/etc/hostname"
    mksquashfs "$d/rootdir" "$d/rootfs.squashfs" -noappend -quiet -no-progress >/dev/null
  done
  say "peer: $PEER_ADDS adds (load $(load1))"
  t0=$(date +%s.%N)
  for i in $(seq 0 $((PEER_ADDS - 1))); do
    [ "$i" = $((PEER_ADDS - 10)) ] && tl=$(date +%s.%N)
    (cd "$WORK/peer/tree" && "$PEER" add "$WORK/peer/img/$i/incus.tar.xz" "$WORK/peer/img/$i/rootfs.squashfs" >/dev/null)
  done
  t1=$(date +%s.%N)
  peer_s=$(echo "$t1 - $t0" | bc -l)
  peer_last=$(echo "($t1 - $tl) * 100" | bc -l) # ms per add, last 10
  peer_versions=$(count_versions <"$WORK/peer/tree/streams/v1/images.json")
  [ "$peer_versions" = "$PEER_ADDS" ] || { echo "the peer lists $peer_versions versions, not $PEER_ADDS" >&2; exit 1; }
  peer_load=$(load1)
fi

echo
echo "Index build (the index module's ten_thousand_versions test, release build: 10,000 versions in 500 products, Index::extend + render, then one upsert + render), $BUILD_ROUNDS runs:"
echo -n "$build_lines" | sed 's/^/- /'
[ "$PEER_ADDS" -gt 0 ] && printf -- '- peer incus-simplestreams: %s adds in %.2f s (%.0f ms per add over the last 10, each rewriting the whole index; load %s)\n' \
  "$PEER_ADDS" "$peer_s" "$peer_last" "$peer_load"
echo "Finished $(date -u '+%H:%M') UTC, load $(load1)"
