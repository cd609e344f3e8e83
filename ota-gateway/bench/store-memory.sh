#!/usr/bin/env bash
# Does the gateway's memory grow with the files in a store, and is it given back (or
# at least reused) when they are deleted? The 30-minute soak saw RssAnon rise from 4.3
# to 12.8 MB while its store grew to 1,674 files; this separates "memory that grows
# with the store" from "a leak" (RELIABILITY.md).
#
# One release gateway with one store. Each round uploads FILES files of 64 KiB in
# filuxe's chunks (4 x 16 KiB, Content-Range, the write key), downloads each once,
# lists the store LISTS times, then deletes every file. RssAnon (/proc/PID/status) is
# printed every STEP files and after the listings and the deletes. If the memory is
# per-file state, it falls or stays level from one round to the next; a leak adds the
# same amount every round.
#
#   bash ota-gateway/bench/store-memory.sh
#   ROUNDS=5 FILES=4000 GATEWAY_BIN=target/release/ota-gateway bash ota-gateway/bench/store-memory.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-3}
FILES=${FILES:-2000}
STEP=${STEP:-500}
LISTS=${LISTS:-50}
WORK=$(mktemp -d /tmp/updraft-store-memory.XXXXXX)
# shellcheck source=lib.sh
source "$ROOT/ota-gateway/bench/lib.sh"
say() { printf '== %s\n' "$*"; }
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
trap "exit 130" INT TERM
KEY=memory-key

gateway_binary

port=$(free_port)
URL="http://127.0.0.1:$port"
mkdir -p "$WORK/store" "$WORK/chunks"
cat >"$WORK/gateway.yaml" <<YAML
listen: 127.0.0.1:$(free_port)
adminListen: 127.0.0.1:$(free_port)
cache: {dir: $WORK/cache}
stores:
- {name: mem, listen: "127.0.0.1:$port", dir: $WORK/store, writeKey: $KEY, allowPlainWrites: true}
YAML
RUST_LOG=warn "$BIN" --config "$WORK/gateway.yaml" >"$WORK/gateway.log" 2>&1 &
pid=$!
until curl -sf -o /dev/null "$URL/api/status"; do sleep 0.2; done

# Four 16 KiB chunks, the same bytes for every file (the store does not care).
head -c 65536 /dev/urandom >"$WORK/file.bin"
split -b 16384 -d -a 1 "$WORK/file.bin" "$WORK/chunks/c"
rss() { awk '/^RssAnon:/ {print $2}' "/proc/$pid/status"; }
row() { printf '%-6s %-22s %7s files %8s kB RssAnon\n' "$1" "$2" "$3" "$(rss)"; }

# upload NAME: the four chunks in one curl process (--next), each answered 201, with a
# float time as filuxe's client sends one (issue #19 lost uploads on such times; this
# script sent none, so it could not see that).
upload() {
  local args=() from=0 i time
  time=$(date +%s.%N)
  for i in 0 1 2 3; do
    [ "$i" -gt 0 ] && args+=(--next)
    args+=(-sf -o /dev/null -X POST -H "key: $KEY" -H "Content-Range: bytes $from-$((from + 16383))/65536"
      --data-binary "@$WORK/chunks/c$i" "$URL/upload/$1?time=${time%???}&force=False")
    from=$((from + 16384))
  done
  curl "${args[@]}"
}

printf '%-6s %-22s %13s %19s\n' round phase store memory
row 0 idle 0
for round in $(seq 1 "$ROUNDS"); do
  for n in $(seq 1 "$FILES"); do
    upload "r$round/f$n.bin"
    if [ $((n % STEP)) -eq 0 ]; then row "$round" "uploaded" "$n"; fi
  done
  for n in $(seq 1 "$FILES"); do echo "url = \"$URL/download/r$round/f$n.bin\""; echo "output = /dev/null"; done >"$WORK/downloads.cfg"
  # Every upload answered 201 must be there: count the downloads that are not 200.
  lost=$(curl -s -w '%{http_code}\n' -K "$WORK/downloads.cfg" | grep -vc '^200$' || true)
  [ "$lost" -eq 0 ] || { echo "round $round: $lost uploads answered 201 are not there" >&2; exit 1; }
  row "$round" "downloaded each" "$FILES"
  for _ in $(seq 1 "$LISTS"); do curl -sf -o /dev/null "$URL/filelist/"; done
  row "$round" "listed x$LISTS" "$FILES"
  # (The key goes on the command line: a `header` line per URL in a config file adds up.)
  for n in $(seq 1 "$FILES"); do echo "url = \"$URL/delete/r$round/f$n.bin\""; echo "output = /dev/null"; done >"$WORK/deletes.cfg"
  curl -sf -H "key: $KEY" -K "$WORK/deletes.cfg"
  left=$(find "$WORK/store" -type f | wc -l)
  row "$round" "deleted" "$left"
done
sleep 5
row end "5 s later" "$left"
grep -c . "$WORK/gateway.log" >/dev/null && grep -i -m5 "error\|panic" "$WORK/gateway.log" || true
