#!/usr/bin/env bash
# Updraft's main job on one machine, from nothing:
#   a local Kubernetes control plane (kube-apiserver 1.20 + etcd + controller-manager)
#   and OCI registry → Updraft's CRDs → firmware pushed with oras → the operator
#   resolving it → the gateway serving the ConfigMap the operator rendered → a
#   simulated ESP32 asking for an update over the OtaFlux API and flashing it.
#
#   quickstart.sh        run it all (again: restarts the operator and gateway)
#   quickstart.sh down   stop the operator and gateway it started
set -euo pipefail
cd "$(dirname "$0")/../.."
ns=updraft-demo
say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31mquickstart: %s\033[0m\n' "$*" >&2; exit 1; }

eval "$(bash e2e/scripts/cluster.sh env)"
run="${UPDRAFT_STATE:-$HOME/.cache/updraft/run}/quickstart"
mkdir -p "$run"
stop() {
  for p in operator gateway; do
    [ -f "$run/$p.pid" ] && kill "$(cat "$run/$p.pid")" 2>/dev/null || true
    rm -f "$run/$p.pid"
  done
}
if [ "${1:-}" = down ]; then stop; say "stopped the quickstart's operator and gateway"; exit 0; fi
stop

say "starting the local control plane and registry (the first run builds kube-apiserver, ~8 min)"
bash e2e/scripts/cluster.sh up >/dev/null
bash e2e/scripts/cluster.sh tools

say "building the operator and gateway (debug)"
cargo build -q --bins -p updraft-operator -p ota-gateway
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug

say "installing Updraft's CRDs"
kubectl apply --server-side --force-conflicts -f crds/crds.yaml
kubectl wait --for=condition=Established --timeout=30s crd --all >/dev/null

say "pushing ESP32 firmware 1.0.0 and 1.1.0 to $UPDRAFT_REGISTRY/firmware/esp32 with oras"
for v in v1.0.0 1.1.0 2.0.0-beta.1; do
  # Deterministic bytes per version: a re-run pushes the same digests.
  python3 -c 'import hashlib,sys; v=sys.argv[1].encode(); sys.stdout.buffer.write(b"".join(hashlib.sha256(v+i.to_bytes(4,"big")).digest() for i in range(6400)))' "$v" >"$run/esp32-$v.bin"
  pushed=$(cd "$run" && oras push --plain-http "$UPDRAFT_REGISTRY/firmware/esp32:$v" "esp32-$v.bin:application/vnd.updraft.firmware.v1" \
    | sed -n 's/^Digest: //p')
  [ "$v" = 1.1.0 ] && expected=$pushed # the newest release within the sample's range
done

say "starting the operator (watching namespace $ns; log $run/operator.log)"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null
"$bin/updraft-operator" --namespace "$ns" --admin-addr 127.0.0.1:38081 >"$run/operator.log" 2>&1 &
echo $! >"$run/operator.pid"

say "applying the samples into namespace $ns"
kubectl apply --server-side -n "$ns" -f crds/samples/
kubectl wait -n "$ns" --for=condition=Ready --timeout=60s fwc/esp32-stable \
  || die "the channel did not become Ready; see $run/operator.log"
for _ in $(seq 150); do # a re-run may find the status of an earlier run for a moment
  [ "$(kubectl get fwc -n "$ns" esp32-stable -o jsonpath='{.status.latest.digest}')" = "$expected" ] && break
  sleep 0.2
done
[ "$(kubectl get fwc -n "$ns" esp32-stable -o jsonpath='{.status.latest.digest}')" = "$expected" ] \
  || die "the channel did not resolve 1.1.0 ($expected); see $run/operator.log"

digest=$expected
for _ in $(seq 100); do # until the gateway config pins what the channel's status says
  kubectl get configmap -n "$ns" default-config -o jsonpath='{.data.gateway\.yaml}' 2>/dev/null | grep -q "$digest" && break
  sleep 0.2
done

say "kubectl get otagw,fwc,imgs,amir -n $ns"
kubectl get otagw,fwc,imgs,amir -n "$ns"
kubectl get configmap,deployment,service -n "$ns" -l app.kubernetes.io/managed-by=updraft-operator

say "running the gateway locally from the ConfigMap the operator rendered (no kubelet here)"
kubectl get configmap -n "$ns" default-config -o jsonpath='{.data.gateway\.yaml}' \
  | sed -e 's/^listen: .*/listen: 127.0.0.1:38080/' -e 's/^adminListen: .*/adminListen: 127.0.0.1:39090/' \
        -e "s#^  dir: .*#  dir: $run/cache#" >"$run/gateway.yaml"
"$bin/ota-gateway" --config "$run/gateway.yaml" >"$run/gateway.log" 2>&1 &
echo $! >"$run/gateway.pid"
for _ in $(seq 50); do curl -fs 127.0.0.1:39090/readyz >/dev/null 2>&1 && break; sleep 0.2; done

say "a simulated ESP32 running 0.9.0 checks for an update (OtaFlux API)"
answer=""
for _ in $(seq 50); do
  answer=$(curl -fs "127.0.0.1:38080/version?device=esp32-devkit") && break
  sleep 0.2
done
[ -n "$answer" ] || die "the gateway did not answer /version; see $run/gateway.log"
{ read -r version; read -r crc; read -r size; } <<<"$answer"$'\n'
echo "GET /version?device=esp32-devkit -> version=$version crc32=$crc size=$size"
curl -fs "127.0.0.1:38080/firmware?device=esp32-devkit" -o "$run/flashed.bin"
got_crc=$(python3 -c 'import sys,zlib; print(zlib.crc32(open(sys.argv[1],"rb").read()))' "$run/flashed.bin")
got_size=$(stat -c %s "$run/flashed.bin")
[ "$got_crc" = "$crc" ] && [ "$got_size" = "$size" ] || die "downloaded firmware does not match: crc $got_crc size $got_size"
cmp -s "$run/flashed.bin" "$run/esp32-$version.bin" || die "downloaded firmware differs from the pushed $version"
echo "GET /firmware?device=esp32-devkit -> $got_size bytes, CRC32 $got_crc verified; device flashes $version"

say "done. The operator and gateway keep running (quickstart.sh down stops them). To use kubectl:"
bash e2e/scripts/cluster.sh env
