#!/usr/bin/env bash
# Scale benchmark (not a test; its reduced form runs in CI as `e2e/tests/scale.rs`):
# 10,000 FirmwareChannels, 1,000 ImageStreams and 1,000 ArtifactMirrors across 10
# OtaGateways, against the local control plane (kube-apiserver 1.20) and registry, with
# the release operator. Reports
#   - the time until every channel, stream and mirror is Ready, and until every gateway's
#     config renders all its channels (from the first object created; objects are
#     created by CREATORS parallel `kubectl apply --server-side`, timed separately);
#   - writes per object, by kind: write requests (create, update, patch) in the API
#     server's audit log (`cluster.sh` turns it on), so nothing polls the API server and
#     a write is counted even when it changed nothing;
#   - writes during IDLE_SECONDS of idle (every object re-checks its source each minute);
#   - the operator's peak RSS (VmHWM) and RSS after idle;
#   - CPU seconds of the operator, kube-apiserver, etcd and the registry over the run,
#     to show which one is the limit.
#
#   bash e2e/scripts/scale.sh                     # the full mix
#   CHANNELS=1000 STREAMS=0 MIRRORS=0 GATEWAYS=1 bash e2e/scripts/scale.sh   # the old figure
#   OPERATOR_BIN=/path/to/updraft-operator bash e2e/scripts/scale.sh   # another build
#
# The figures depend on the machine being quiet: on a shared machine, note the load
# (`uptime`) beside them.
set -euo pipefail
cd "$(dirname "$0")/../.."
GATEWAYS=${GATEWAYS:-10}
CHANNELS=${CHANNELS:-10000}
STREAMS=${STREAMS:-1000}
MIRRORS=${MIRRORS:-1000}
REPOS=${REPOS:-100}
IMAGE_REPOS=${IMAGE_REPOS:-10}
INTERVAL=${INTERVAL:-1m}
IDLE_SECONDS=${IDLE_SECONDS:-60}
CREATORS=${CREATORS:-8}
TIMEOUT=${TIMEOUT:-600}
say() { printf '\033[1m[scale]\033[0m %s\n' "$*" >&2; }

bash e2e/scripts/cluster.sh up >/dev/null
bash e2e/scripts/cluster.sh tools
eval "$(bash e2e/scripts/cluster.sh env)"
if [[ -z "${OPERATOR_BIN:-}" ]]; then
  say "building the release operator"
  cargo build -q --release -p updraft-operator
  OPERATOR_BIN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/updraft-operator
fi
work=$(mktemp -d /tmp/updraft-scale.XXXXXX)
ns=scale-$(date +%s)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "namespaces/$ns/.*watch=1" 2>/dev/null || true
  kubectl delete ns "$ns" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

# --- the registry: firmware (two versions a repository), the same bytes again as each
# mirror's destination (in sync: a steady mirror), and one image a stream repository.
say "pushing firmware to $REPOS repositories, their mirrors, and $IMAGE_REPOS image repositories"
head -c 4096 /dev/urandom >"$work/fw.bin"
created='org.opencontainers.image.created=2026-01-01T00:00:00Z' # the same manifest digest in every repository
push_fw() {
  local v repo
  for repo in "scale/fw$1" "scale/mirror$1"; do
    for v in 1.0.0 1.1.0; do
      (cd "$work" && oras push --plain-http --annotation "$created" "$UPDRAFT_REGISTRY/$repo:$v" \
        fw.bin:application/vnd.updraft.firmware.v1) >/dev/null || { echo "oras push $repo:$v failed" >&2; return 1; }
    done
  done
}
push_image() { # an image as `incus image export` writes it: metadata tarball + root file system
  local d="$work/image$1"
  mkdir -p "$d"
  printf 'architecture: x86_64\ncreation_date: 1767225600\nproperties:\n  os: Debian\n  release: bookworm\n  variant: default\n  description: Debian bookworm\ntemplates: {}\n' >"$d/metadata.yaml"
  tar -C "$d" -cJf "$d/meta-1.tar.xz" metadata.yaml
  echo "a root file system $1" >"$d/rootfs-1.squashfs"
  (cd "$d" && oras push --plain-http "$UPDRAFT_REGISTRY/scale/images$1:bookworm" meta-1.tar.xz rootfs-1.squashfs) >/dev/null \
    || { echo "oras push scale/images$1 failed" >&2; return 1; }
}
jobs_=()
for r in $(seq 1 "$REPOS"); do
  push_fw "$r" &
  jobs_+=($!)
  if (( r % 10 == 0 )); then for p in "${jobs_[@]}"; do wait "$p" || exit 1; done; jobs_=(); fi
done
for r in $(seq 1 "$IMAGE_REPOS"); do push_image "$r" & jobs_+=($!); done
for p in "${jobs_[@]}"; do wait "$p" || exit 1; done

# --- the objects: gateways first (one file), then CREATORS shards of the rest.
kubectl create namespace "$ns" >/dev/null
reg=$UPDRAFT_REGISTRY
for g in $(seq 1 "$GATEWAYS"); do
  printf -- '---\napiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: gw%d}\nspec: {}\n' "$g"
done >"$work/gateways.yaml"
python3 - "$work" "$CREATORS" "$GATEWAYS" "$CHANNELS" "$STREAMS" "$MIRRORS" "$REPOS" "$IMAGE_REPOS" "$INTERVAL" "$reg" <<'PY'
import sys
work, shards, gws, chans, streams, mirrors, repos, images, interval, reg = sys.argv[1:]
shards, gws, chans, streams, mirrors, repos, images = map(int, (shards, gws, chans, streams, mirrors, repos, images))
docs = []
head = "apiVersion: updraft.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n  gatewayRef: gw{gw}\n  interval: {interval}\n"
for c in range(1, chans + 1):
    docs.append(head.format(kind="FirmwareChannel", name=f"ch{c}", gw=(c - 1) % gws + 1, interval=interval)
                + f"  source: {{registry: \"{reg}\", repository: scale/fw{(c - 1) % repos + 1}, insecure: true}}\n")
for s in range(1, streams + 1):
    docs.append(head.format(kind="ImageStream", name=f"is{s}", gw=(s - 1) % gws + 1, interval=interval)
                + f"  source: {{oci: {{registry: \"{reg}\", repository: scale/images{(s - 1) % images + 1}, insecure: true}}}}\n")
for m in range(1, mirrors + 1):
    r = (m - 1) % repos + 1
    docs.append(head.format(kind="ArtifactMirror", name=f"am{m}", gw=(m - 1) % gws + 1, interval=interval)
                + f"  source: {{oci: {{registry: \"{reg}\", repository: scale/fw{r}, insecure: true}}}}\n"
                + f"  destination: {{oci: {{registry: \"{reg}\", repository: scale/mirror{r}, insecure: true}}}}\n")
for i in range(shards):
    with open(f"{work}/objects-{i}.yaml", "w") as f:
        f.write("---\n".join(docs[i::shards]))
PY

# --- readiness: a watch per kind, curl writing the API server's event stream (one JSON
# line an event) straight to a file, and a small reader following the file that keeps,
# per object, whether it is Ready. (kubectl's watch was closed by the API server for
# reading too slowly, re-encoding thousands of events on a busy machine, and the count
# stopped.) A watch that ends is started again: its first events list every object.
[[ -n "${UPDRAFT_AUDIT_LOG:-}" && -f "$UPDRAFT_AUDIT_LOG" ]] \
  || { say "no API server audit log: restart the control plane (bash e2e/scripts/cluster.sh down; bash e2e/scripts/cluster.sh up)"; exit 1; }
cat >"$work/follow.py" <<'PY'
import json, sys, time
kind, source, out = sys.argv[1:]
objs = {}  # name -> [ready, message]
last = 0.0
def dump(force=False):
    global last
    now = time.time()
    if not force and now - last < 0.25:
        return
    last = now
    summary = {"kind": kind, "objects": len(objs), "ready": sum(1 for o in objs.values() if o[0]),
               "messages": [o[1] for o in objs.values()] if kind == "otagateways" else []}
    with open(out + ".tmp", "w") as f:
        json.dump(summary, f)
    import os; os.replace(out + ".tmp", out)
def lines(path):  # the file curl writes, followed as it grows
    with open(path, "rb") as f:
        while True:
            line = f.readline()
            if line.endswith(b"\n"):
                yield line
            else:
                if line:  # half written: read again once the rest is there
                    f.seek(-len(line), 1)
                dump(force=True)
                time.sleep(0.2)
for line in lines(source):
    try:
        ev = json.loads(line)
    except ValueError:
        continue  # a line a closed watch cut short
    t, obj = ev.get("type"), ev.get("object", {})
    name = obj.get("metadata", {}).get("name")
    if name is None:
        continue
    if t == "DELETED":
        objs.pop(name, None)
        continue
    cond = next((c for c in obj.get("status", {}).get("conditions", []) if c.get("type") == "Ready"), None)
    objs[name] = [bool(cond and cond.get("status") == "True"), cond.get("message", "") if cond else ""]
    dump()
PY
# --- writes: the audit log's write requests in this namespace, from the offset where
# the run began, by kind: objects, creations, updates, most updates on one object.
audit_from=$(stat -c %s "$UPDRAFT_AUDIT_LOG")
cat >"$work/writes.py" <<'PY'
import json, sys
log, ns, offset = sys.argv[1], sys.argv[2], int(sys.argv[3])
kinds = sys.argv[4:]
per = {k: {} for k in kinds}  # kind -> name -> [creations, updates]
with open(log, "rb") as f:
    f.seek(offset)
    for line in f:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        ref, code = e.get("objectRef", {}), e.get("responseStatus", {}).get("code", 0)
        if ref.get("namespace") != ns or ref.get("resource") not in per or not 200 <= code < 300:
            continue
        if e.get("verb") not in ("create", "update", "patch"):
            continue
        o = per[ref["resource"]].setdefault(ref.get("name", ""), [0, 0])
        # 201 is a creation, by a create or by a server-side apply (a patch) alike.
        o[0 if code == 201 else 1] += 1
for k in kinds:
    objs = per[k].values()
    print(k, len(per[k]), sum(o[0] for o in objs), sum(o[1] for o in objs), max((o[1] for o in objs), default=0))
PY
kinds=(firmwarechannels imagestreams artifactmirrors otagateways configmaps deployments services)
api=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')
token=$(kubectl config view --raw --minify -o jsonpath='{.users[0].user.token}')
watch_kind() {
  local group=apis/updraft.dev/v1alpha1
  case $1 in configmaps | services) group=api/v1 ;; deployments) group=apis/apps/v1 ;; esac
  while true; do
    curl -sS -N --cacert "$ca" -H "Authorization: Bearer $token" "$api/$group/namespaces/$ns/$1?watch=1" \
      >>"$work/watch-$1.json" 2>>"$work/watch-$1.err" || true
    echo >>"$work/watch-$1.json" # ends a line the closed watch cut short
    echo "$(date +%T.%N) the watch of $1 ended; watching again" >>"$work/watch-$1.err"
    sleep 0.2
  done
}
for kind in "${kinds[@]}"; do
  : >"$work/watch-$kind.json"
  watch_kind "$kind" &
  pids+=($!)
  python3 "$work/follow.py" "$kind" "$work/watch-$kind.json" "$work/$kind.json" &
  pids+=($!)
done
sleep 2

cpu() { # user+system CPU seconds of a process, 0 when it is gone
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}
pid_of() { pgrep -o -x "$1" 2>/dev/null || pgrep -o -f "$2" 2>/dev/null || echo 0; }
apiserver=$(pid_of kube-apiserver kube-apiserver)
etcd=$(pid_of etcd 'etcd --')
registry=$(pid_of docker-registry 'registry serve')
cpu0=("$(cpu "$apiserver")" "$(cpu "$etcd")" "$(cpu "$registry")")

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
admin=$(free_port)
# As the chart runs it: with the gateways' config endpoint (which holds a gateway's
# ConfigMap and status writes to one per 30 s while its channels keep changing).
config_port=$(free_port)
endpoint=(--config-addr "127.0.0.1:$config_port" --config-url "http://127.0.0.1:$config_port")
"$OPERATOR_BIN" --namespace "$ns" --admin-addr "127.0.0.1:$admin" "${endpoint[@]}" --log-level warn >"$work/operator.log" 2>&1 &
op=$!; pids+=($op)
sleep 1
start=$(date +%s.%N)
say "creating $GATEWAYS OtaGateways, $CHANNELS FirmwareChannels, $STREAMS ImageStreams, $MIRRORS ArtifactMirrors ($CREATORS kubectl in parallel)"
kubectl apply --server-side -f "$work/gateways.yaml" -n "$ns" >/dev/null
creators=()
for i in $(seq 0 $((CREATORS - 1))); do
  kubectl apply --server-side -f "$work/objects-$i.yaml" -n "$ns" >/dev/null &
  creators+=($!)
done
for p in "${creators[@]}"; do wait "$p"; done
created_s=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
say "all created after $created_s s"

# Ready: every channel, stream and mirror Ready, and every gateway's config renders its
# channels (its Ready message says "serving N channels"; no kubelet runs its pods).
per_gw=$(( CHANNELS / GATEWAYS ))
progress() {
  python3 - "$work" "$CHANNELS" "$STREAMS" "$MIRRORS" "$per_gw" "$start" <<'PY'
import json, re, sys, time
work, c, s, m, per_gw, start = sys.argv[1:]
want = {"firmwarechannels": int(c), "imagestreams": int(s), "artifactmirrors": int(m)}
def load(k):
    try:
        return json.load(open(f"{work}/{k}.json"))
    except Exception:
        return {"ready": 0, "messages": []}
ready = {k: load(k)["ready"] for k in want}
served = [int(x.group(1)) for msg in load("otagateways")["messages"] for x in [re.search(r"serving (\d+) channels", msg)] if x]
rendered = sum(1 for n in served if n >= int(per_gw))
done = all(ready[k] >= want[k] for k in want) and rendered >= len(served) > 0
print(f"{time.time() - float(start):6.1f} s: channels {ready['firmwarechannels']}/{c} streams {ready['imagestreams']}/{s} "
      f"mirrors {ready['artifactmirrors']}/{m} gateways rendered {rendered}/{len(served)}", "done" if done else "")
PY
}
while true; do
  line=$(progress)
  printf '\r[scale] %s' "$line" >&2
  [[ "$line" == *done ]] && break
  elapsed=$(python3 -c "import time; print(int(time.time() - $start))")
  if (( elapsed > TIMEOUT )); then echo >&2; say "gave up after $TIMEOUT s"; tail -20 "$work/operator.log" >&2; exit 1; fi
  sleep 0.5
done
echo >&2
ready_s=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
cpu_ready=("$(cpu "$op")" "$(cpu "$apiserver")" "$(cpu "$etcd")" "$(cpu "$registry")")
sleep 5 # the last re-render lands (the gateway controller debounces)
snapshot() { python3 "$work/writes.py" "$UPDRAFT_AUDIT_LOG" "$ns" "$audit_from" "${kinds[@]}"; }
snapshot >"$work/at-ready.txt"
rss_peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$op/status")

say "idle for $IDLE_SECONDS s (every object re-checks its source each $INTERVAL)"
sleep "$IDLE_SECONDS"
snapshot >"$work/after-idle.txt"
rss_idle_kib=$(awk '/VmRSS/ {print $2}' "/proc/$op/status")
cpu_idle=("$(cpu "$op")" "$(cpu "$apiserver")" "$(cpu "$etcd")" "$(cpu "$registry")")
events_created=$(kubectl get events.events.k8s.io -n "$ns" --no-headers 2>/dev/null | wc -l)

# A restart (an upgrade, a new leader) finds every object existing: it checks every
# source again at once and should write nothing that did not change.
restart_s=skipped restart_writes=skipped
if [[ "${RESTART:-1}" == 1 ]]; then
  say "restarting the operator: every object checks its source again"
  kill "$op"; wait "$op" 2>/dev/null || true
  snapshot >"$work/before-restart.txt"
  admin=$(free_port)
  restarted=$(date +%s.%N)
  "$OPERATOR_BIN" --namespace "$ns" --admin-addr "127.0.0.1:$admin" "${endpoint[@]}" --log-level warn >"$work/operator-restart.log" 2>&1 &
  op=$!; pids+=($op)
  want=$(( CHANNELS + STREAMS + MIRRORS ))
  checks=0
  while (( checks < want )); do
    sleep 0.5
    checks=$(curl -s "127.0.0.1:$admin/metrics" | awk '/^updraft_operator_registry_checks_total/ {n += $2} END {print n + 0}')
    printf '\r[scale] %d/%d sources checked again after %.1f s' "$checks" "$want" "$(python3 -c "import time; print(time.time() - $restarted)")" >&2
    if python3 -c "import sys, time; sys.exit(0 if time.time() - $restarted > $TIMEOUT else 1)"; then echo >&2; say "gave up"; exit 1; fi
  done
  echo >&2
  restart_s=$(python3 -c "import time; print(f'{time.time() - $restarted:.1f}')")
  sleep 5
  snapshot >"$work/after-restart.txt"
  restart_writes=$(python3 -c "
import sys
t = lambda f: {l.split()[0]: int(l.split()[2]) + int(l.split()[3]) for l in open(f)}
a, b = t(sys.argv[1]), t(sys.argv[2])
print({k: b[k] - a[k] for k in a if b[k] != a[k]} or 0)
" "$work/before-restart.txt" "$work/after-restart.txt")
  restart_writes="$restart_writes; CPU seconds: operator $(cpu "$op"), kube-apiserver $(python3 -c "print(round($(cpu "$apiserver") - ${cpu_idle[1]}, 1))")"
fi

python3 - "$work" "$created_s" "$ready_s" "$rss_peak_kib" "$rss_idle_kib" "$IDLE_SECONDS" "$events_created" \
  "${cpu0[*]}" "${cpu_ready[*]}" "${cpu_idle[*]}" "$(uptime)" "$restart_s" "$restart_writes" <<'PY'
import sys
work, created, ready, peak, idle_rss, idle_s, events, cpu0, cpu_ready, cpu_idle, load, restart_s, restart_writes = sys.argv[1:]
def table(name):
    return {l.split()[0]: list(map(int, l.split()[1:])) for l in open(f"{work}/{name}")}
at, after = table("at-ready.txt"), table("after-idle.txt")
api0, etcd0, reg0 = map(float, cpu0.split())
op1, api1, etcd1, reg1 = map(float, cpu_ready.split())
op2, api2, etcd2, reg2 = map(float, cpu_idle.split())
print(f"machine load                    {load.split('load average:')[-1].strip()} (1, 5, 15 min)")
print(f"objects created (kubectl)       {float(created):.1f} s")
print(f"all Ready, all configs rendered {float(ready):.1f} s after the first object   (target < 120 s)")
print("writes until then, by kind      objects  created  updates  per object  most on one object")
total_objs = total_writes = 0
for kind, (n, added, modified, most) in at.items():
    per = modified / n if n else 0
    print(f"  {kind:18} {n:>16} {added:>8} {modified:>8} {per:>11.2f} {most:>10}")
    if kind in ("firmwarechannels", "imagestreams", "artifactmirrors"):
        total_objs += n; total_writes += modified
print(f"status writes per channel/stream/mirror  {total_writes / max(total_objs, 1):.2f}   (target <= 3)")
idle = {k: after[k][2] - at[k][2] + after[k][1] - at[k][1] for k in at}
print(f"writes during {idle_s} s idle         {sum(idle.values())}   (target 0) {({k: v for k, v in idle.items() if v})}")
print(f"Events created (all)            {events}")
print(f"operator peak RSS               {int(peak) / 1024:.1f} MiB   (target < 256 MiB); after idle {int(idle_rss) / 1024:.1f} MiB")
print("CPU seconds                     until Ready   during idle")
for name, a, b, c in [("operator", 0, op1, op2), ("kube-apiserver", api0, api1, api2), ("etcd", etcd0, etcd1, etcd2), ("registry", reg0, reg1, reg2)]:
    print(f"  {name:28} {b - a:>10.1f} {c - b:>12.1f}")
print(f"restarted operator: every source checked again in {restart_s} s, writes {restart_writes}")
PY
say "work directory (watch summaries, operator log): $work"
