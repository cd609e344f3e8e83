#!/usr/bin/env bash
# Scale benchmark (not a test): 1000 FirmwareChannels over 100 repositories against the
# local control plane and registry, with the release operator. Reports the time until all
# are Ready, API writes per channel to get there (watch events on the channels and on the
# objects the operator owns), operator RSS, and writes during an idle period.
#
#   bash e2e/scripts/scale.sh            # CHANNELS=1000 REPOS=100 IDLE_SECONDS=300
set -euo pipefail
cd "$(dirname "$0")/../.."
CHANNELS=${CHANNELS:-1000}
REPOS=${REPOS:-100}
IDLE_SECONDS=${IDLE_SECONDS:-300}
say() { printf '\033[1m[scale]\033[0m %s\n' "$*" >&2; }

bash e2e/scripts/cluster.sh up >/dev/null
bash e2e/scripts/cluster.sh tools
eval "$(bash e2e/scripts/cluster.sh env)"
say "building the release operator"
cargo build -q --release -p updraft-operator
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
work=$(mktemp -d /tmp/updraft-scale.XXXXXX)
ns=scale-$(date +%s)
pids=()
pushes=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; kubectl delete ns "$ns" --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

say "pushing 2 versions to each of $REPOS repositories"
head -c 4096 /dev/urandom >"$work/fw.bin"
push_repo() { # both versions of one repository, one after the other (same blob)
  local v
  for v in 1.0.0 1.1.0; do
    (cd "$work" && oras push --plain-http "$UPDRAFT_REGISTRY/scale/fw$1:$v" fw.bin:application/vnd.updraft.firmware.v1) >/dev/null \
      || { echo "oras push scale/fw$1:$v failed" >&2; return 1; }
  done
}
for r in $(seq 1 "$REPOS"); do
  push_repo "$r" &
  pushes+=($!)
  if (( r % 10 == 0 )); then
    for p in "${pushes[@]}"; do wait "$p" || exit 1; done
    pushes=()
  fi
done
for p in "${pushes[@]}"; do wait "$p" || exit 1; done

kubectl create namespace "$ns" >/dev/null
{
  echo "apiVersion: updraft.dev/v1alpha1"; echo "kind: OtaGateway"; echo "metadata: {name: default}"; echo "spec: {}"
  for c in $(seq 1 "$CHANNELS"); do
    echo "---"
    echo "apiVersion: updraft.dev/v1alpha1"
    echo "kind: FirmwareChannel"
    echo "metadata: {name: ch$c}"
    echo "spec: {interval: 1m, source: {registry: \"$UPDRAFT_REGISTRY\", repository: scale/fw$(( (c - 1) % REPOS + 1 )), insecure: true}}"
  done
} >"$work/objects.yaml"

# Every write to a watched object is one watch event (ADDED for creations, MODIFIED after).
for kind in firmwarechannels otagateways configmaps deployments services; do
  kubectl get "$kind" -n "$ns" --watch --output-watch-events -o json >"$work/watch-$kind.json" 2>/dev/null &
  pids+=($!)
done
sleep 1

"$bin/updraft-operator" --namespace "$ns" --admin-addr 127.0.0.1:0 --log-level warn >"$work/operator.log" 2>&1 &
op=$!; pids+=($op)
start=$(date +%s.%N)
say "creating $CHANNELS FirmwareChannels"
kubectl apply --server-side -f "$work/objects.yaml" -n "$ns" >/dev/null

ready=0
while (( ready < CHANNELS )); do
  sleep 0.5
  ready=$(kubectl get fwc -n "$ns" -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)
  elapsed=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
  printf '\r[scale] %4d/%d Ready after %5ss' "$ready" "$CHANNELS" "$elapsed" >&2
  python3 -c "import sys; sys.exit(0 if $elapsed < 600 else 1)" || { echo; say "gave up after 600 s"; exit 1; }
done
echo >&2
sleep 3 # let the gateway's last re-render land
modified() { # MODIFIED watch events so far (kubectl prints one JSON document a line)
  grep -c '^{"type":"MODIFIED"' "$work/watch-$1.json" || true
}
channel_writes=$(modified firmwarechannels)
owned_writes=$(( $(modified otagateways) + $(modified configmaps) + $(modified deployments) + $(modified services) ))
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$op/status")
anon_kib=$(awk '/RssAnon/ {print $2}' "/proc/$op/status")

say "idle for $IDLE_SECONDS s (every channel re-checks its registry each minute)"
before_c=$channel_writes; before_o=$owned_writes
sleep "$IDLE_SECONDS"
idle_writes=$(( $(modified firmwarechannels) - before_c + $(modified otagateways) + $(modified configmaps) + $(modified deployments) + $(modified services) - before_o ))
rss_idle_kib=$(awk '/VmRSS/ {print $2}' "/proc/$op/status")

python3 - "$CHANNELS" "$elapsed" "$channel_writes" "$owned_writes" "$rss_kib" "$anon_kib" "$idle_writes" "$rss_idle_kib" "$IDLE_SECONDS" <<'PY'
import sys
n, t, cw, ow, rss, anon, idle, rss_idle, idle_s = sys.argv[1:]
n = int(n)
print(f"channels                       {n}")
print(f"time until all Ready           {float(t):.1f} s   (target < 60 s)")
print(f"status writes per channel      {int(cw) / n:.2f}    (target <= 3)")
print(f"writes to owned objects+gateway {ow} in total ({(int(cw) + int(ow)) / n:.2f} writes per channel overall)")
print(f"operator RSS when all Ready    {int(rss) / 1024:.1f} MiB (anon {int(anon) / 1024:.1f} MiB; target < 100 MiB)")
print(f"writes during {idle_s} s idle      {idle}     (target 0)")
print(f"operator RSS after idle        {int(rss_idle) / 1024:.1f} MiB")
PY
