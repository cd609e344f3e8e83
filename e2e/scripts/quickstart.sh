#!/usr/bin/env bash
# Updraft's three jobs on one machine, from nothing:
#   a local Kubernetes control plane (kube-apiserver 1.20 + etcd + controller-manager)
#   and OCI registry → Updraft's CRDs → the samples in crds/samples/ →
#   1. firmware: pushed with oras, resolved by the operator, served by the gateway from
#      the ConfigMap the operator rendered, fetched and checked by a simulated ESP32
#      over the OtaFlux API;
#   2. images: an LXD/Incus image pushed with oras, listed by `incus image list` over
#      HTTPS from the same gateway (an ImageStream);
#   3. artifacts: a file uploaded the way filuxe's client uploads to the gateway's
#      artifact store (LAN), forwarded by the mirror worker (an ArtifactMirror) to a
#      second gateway's store (WAN, run standalone from a hand-written config file),
#      and compared there byte for byte.
#   There is no kubelet here: the quickstart runs the gateway and the mirror worker as
#   local processes, from the rendered ConfigMap and with the Secrets laid out where the
#   pods would mount them, and reports their /readyz on their pods as a kubelet would.
#
#   quickstart.sh        run it all (again: restarts what it started, empties the stores)
#   quickstart.sh down   stop the operator, gateways and mirror worker it started
set -euo pipefail
cd "$(dirname "$0")/../.."
ns=updraft-demo
say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31mquickstart: %s\033[0m\n' "$*" >&2; exit 1; }

eval "$(bash e2e/scripts/cluster.sh env)"
run="${UPDRAFT_STATE:-$HOME/.cache/updraft/run}/quickstart"
mkdir -p "$run"
procs="operator gateway mirror wan"
stop() {
  for p in $procs; do
    [ -f "$run/$p.pid" ] && kill "$(cat "$run/$p.pid")" 2>/dev/null || true
    rm -f "$run/$p.pid"
  done
}
if [ "${1:-}" = down ]; then stop; say "stopped the quickstart's operator, gateways and mirror worker"; exit 0; fi
stop
started=$(date +%s)

# Local ports. The rendered config says 0.0.0.0:<port> as a pod would listen; each local
# process gets its own loopback port instead (the pod's port → the local one).
#   gateway (LAN)   http 8080 → 28080, https 8443 → 28443, store 8081 → 28082, admin 9090 → 29090
#   mirror worker   admin 9090 → 29091
#   WAN gateway     http 27080, https 27443, store 27081, admin 27090 (its own config file)
#   operator        admin 28081
# crds/samples/artifactmirror.yaml names the two stores at these addresses. All are below
# 32768, outside Linux's ephemeral range: a fixed port there was once taken by another
# program's outgoing connection ("the WAN gateway did not start: address in use").

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
  # Deterministic bytes and creation time per version: a re-run pushes the same digests.
  python3 -c 'import hashlib,sys; v=sys.argv[1].encode(); sys.stdout.buffer.write(b"".join(hashlib.sha256(v+i.to_bytes(4,"big")).digest() for i in range(6400)))' "$v" >"$run/esp32-$v.bin"
  pushed=$(cd "$run" && oras push --plain-http --annotation org.opencontainers.image.created=2026-01-01T00:00:00Z \
    "$UPDRAFT_REGISTRY/firmware/esp32:$v" "esp32-$v.bin:application/vnd.updraft.firmware.v1" \
    | sed -n 's/^Digest: //p')
  [ "$v" = 1.1.0 ] && expected=$pushed # the newest release within the sample's range
done

say "a test CA and a certificate for 127.0.0.1 (incus and lxc accept only https remotes; store writes need TLS)"
pki="$run/pki"
mkdir -p "$pki"
if [ ! -s "$pki/tls.crt" ]; then
  (cd "$pki" && openssl ecparam -name prime256v1 -genkey -noout -out ca.key \
    && openssl req -x509 -new -key ca.key -subj "/CN=Updraft quickstart CA" -days 365 -out ca.pem \
    && openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out tls.key \
    && openssl req -new -key tls.key -subj /CN=127.0.0.1 -out leaf.csr \
    && printf 'subjectAltName=IP:127.0.0.1\n' >ext.cnf \
    && openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 -extfile ext.cnf -out tls.crt) \
    >"$run/pki.log" 2>&1 || die "openssl failed; see $run/pki.log"
fi
# The operator and the mirror worker verify the stores' certificate against the system's
# roots (rustls-native-certs reads SSL_CERT_FILE): the system bundle plus the test CA.
system_roots=/etc/ssl/certs/ca-certificates.crt
{ [ -r "$system_roots" ] && cat "$system_roots"; cat "$pki/ca.pem"; } >"$pki/roots.pem"

say "starting the operator (watching namespace $ns; log $run/operator.log)"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null
SSL_CERT_FILE="$pki/roots.pem" "$bin/updraft-operator" --namespace "$ns" --admin-addr 127.0.0.1:28081 >"$run/operator.log" 2>&1 &
echo $! >"$run/operator.pid"

say "pushing an Incus image (the two files \`incus image export\` writes) to $UPDRAFT_REGISTRY/images/lab with oras"
img="$run/image"
rm -rf "$img" && mkdir -p "$img/rootdir/etc"
echo updraft-quickstart >"$img/rootdir/etc/hostname"
printf 'architecture: x86_64\ncreation_date: 1767225600\nproperties:\n  os: Debian\n  release: bookworm\n  variant: default\n  description: Debian bookworm (Updraft quickstart)\ntemplates: {}\n' >"$img/metadata.yaml"
touch -d @1767225600 "$img/metadata.yaml" "$img/rootdir/etc/hostname" "$img/rootdir/etc" "$img/rootdir"
(cd "$img" && tar --owner=0 --group=0 --numeric-owner -cJf meta.tar.xz metadata.yaml \
  && mksquashfs rootdir rootfs.squashfs -noappend -all-root -quiet -mkfs-time 1767225600 -all-time 1767225600 >/dev/null) \
  || die "could not build the image (tar, xz, mksquashfs)"
fingerprint=$(cat "$img/meta.tar.xz" "$img/rootfs.squashfs" | sha256sum | cut -d' ' -f1)
mv "$img/meta.tar.xz" "$img/meta-$fingerprint.tar.xz"
mv "$img/rootfs.squashfs" "$img/$fingerprint.squashfs"
(cd "$img" && oras push --plain-http --annotation org.opencontainers.image.created=2026-01-01T00:00:00Z \
  "$UPDRAFT_REGISTRY/images/lab:20260101_0000" "meta-$fingerprint.tar.xz" "$fingerprint.squashfs" >/dev/null) \
  || die "oras push of the image failed"

say "the WAN side: a second gateway with an artifact store, run standalone from a hand-written config"
# Store keys are generated once per machine and kept with the quickstart's state.
keys="$run/keys"
mkdir -p "$keys" && chmod 700 "$keys"
for k in lan-store wan-store; do
  [ -s "$keys/$k.key" ] || (umask 077 && openssl rand -hex 32 >"$keys/$k.key")
done
rm -rf "$run/wan" && mkdir -p "$run/wan"
cat >"$run/wan/gateway.yaml" <<EOF_WAN
# A gateway outside Kubernetes: no channels, one artifact store, HTTPS with the test
# certificate (so the store takes writes: the write key never crosses in the clear).
listen: 127.0.0.1:27080
adminListen: 127.0.0.1:27090
cache:
  dir: $run/wan/cache
tls:
  listen: 127.0.0.1:27443
  certFile: $pki/tls.crt
  keyFile: $pki/tls.key
stores:
- name: wan
  listen: 127.0.0.1:27081
  dir: $run/wan/store
  writeKeyFile: $keys/wan-store.key
EOF_WAN
"$bin/ota-gateway" --config "$run/wan/gateway.yaml" >"$run/wan.log" 2>&1 &
echo $! >"$run/wan.pid"
for _ in $(seq 100); do curl -fs 127.0.0.1:27090/readyz >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs 127.0.0.1:27090/readyz >/dev/null || die "the WAN gateway did not start; see $run/wan.log"
echo "ota-gateway --config $run/wan/gateway.yaml  (store: https://127.0.0.1:27081)"

say "applying the samples into namespace $ns, with the gateway's TLS Secret, store volume and store keys"
kubectl create secret tls gateway-cert -n "$ns" --cert="$pki/tls.crt" --key="$pki/tls.key" --dry-run=client -o yaml \
  | kubectl apply --server-side -f - >/dev/null
# The LAN store's write key (the OtaGateway's spec.store), and the WAN store's, which the
# ArtifactMirror sample names as its destination's keySecret (the Secret's key `key`).
kubectl create secret generic store-key -n "$ns" --from-file=key="$keys/lan-store.key" --dry-run=client -o yaml \
  | kubectl apply --server-side -f - >/dev/null
kubectl create secret generic wan-store-key -n "$ns" --from-file=key="$keys/wan-store.key" --dry-run=client -o yaml \
  | kubectl apply --server-side -f - >/dev/null
# The store's volume. Nothing provisions it here (the local gateway uses a directory);
# the operator only checks that the claim exists.
kubectl apply --server-side -n "$ns" -f - >/dev/null <<'EOF_PVC'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: store}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
EOF_PVC
kubectl apply --server-side -n "$ns" -f crds/samples/
# The quickstart's own fields beside the samples' (another field manager). kubectl 1.20
# would check this partial ArtifactMirror for the required source and destination; the
# API server validates the merged object instead.
kubectl apply --server-side --validate=false --field-manager=quickstart -n "$ns" -f - <<'EOF_GW' >/dev/null
apiVersion: updraft.dev/v1alpha1
kind: OtaGateway
metadata: {name: default}
spec:
  tls: {secretName: gateway-cert}
  store:
    claimName: store
    writeKeySecret: {name: store-key, key: key}
---
# The operator compares the two stores every spec.interval (10m by default); every 30 s
# here, so the status catches up with the worker within the quickstart.
apiVersion: updraft.dev/v1alpha1
kind: ArtifactMirror
metadata: {name: releases-to-wan}
spec:
  interval: 30s
EOF_GW
kubectl wait -n "$ns" --for=condition=Ready --timeout=60s fwc/esp32-stable \
  || die "the channel did not become Ready; see $run/operator.log"
for _ in $(seq 150); do # a re-run may find the status of an earlier run for a moment
  [ "$(kubectl get fwc -n "$ns" esp32-stable -o jsonpath='{.status.latest.digest}')" = "$expected" ] && break
  sleep 0.2
done
[ "$(kubectl get fwc -n "$ns" esp32-stable -o jsonpath='{.status.latest.digest}')" = "$expected" ] \
  || die "the channel did not resolve 1.1.0 ($expected); see $run/operator.log"

rendered() { kubectl get configmap -n "$ns" default-config -o jsonpath='{.data.gateway\.yaml}' 2>/dev/null; }
for _ in $(seq 150); do # until the config pins the channel's release, serves the stream over https, has the store and the mirror
  c=$(rendered) || true
  grep -q "$expected" <<<"$c" && grep -q "name: lab-images" <<<"$c" && grep -q "^tls:" <<<"$c" \
    && grep -q "^stores:" <<<"$c" && grep -q "^mirrors:" <<<"$c" && break
  sleep 0.2
done
grep -q "^mirrors:" <<<"$(rendered)" || die "the operator did not render the store and the mirror; see $run/operator.log"

say "kubectl get configmap,deployment,service -n $ns -l app.kubernetes.io/managed-by=updraft-operator"
kubectl get configmap,deployment,service -n "$ns" -l app.kubernetes.io/managed-by=updraft-operator

# What the kubelet would mount, under $pod: every Secret the rendered config names, read
# from the API server (not from the files above), at the path the config names.
pod="$run/pod"
rm -rf "$pod" && mkdir -p "$pod"
mount_secret() { # mount_secret SECRET KEY DIR
  mkdir -p "$pod$3" && chmod 700 "$pod$3"
  kubectl get secret -n "$ns" "$1" -o jsonpath="{.data.${2//./\\.}}" | base64 -d >"$pod$3/$2"
}
mount_secret gateway-cert tls.crt /etc/updraft/tls
mount_secret gateway-cert tls.key /etc/updraft/tls
mount_secret store-key key /etc/updraft/store-key
mount_secret wan-store-key key /etc/updraft/mirror-keys/wan-store-key
local_config() { # local_config ADMIN_PORT: the rendered gateway.yaml with local paths and ports
  rendered | sed -e "s#: /\(etc\|var\)/#: $pod/\1/#" \
    -e 's/0\.0\.0\.0:8080$/127.0.0.1:28080/' -e 's/0\.0\.0\.0:8443$/127.0.0.1:28443/' \
    -e 's/0\.0\.0\.0:8081$/127.0.0.1:28082/' -e "s/0\.0\.0\.0:9090\$/127.0.0.1:$1/"
}
# A kubelet's readiness report: once the local process answers /readyz, the pods of its
# Deployment are marked Ready (through `kubectl proxy`: kubectl 1.20 cannot write a
# subresource), until the Deployment (and so the OtaGateway) counts them. A rollout the
# operator started meanwhile replaces pods: the new ones are marked in the next round.
report_ready() { # report_ready DEPLOYMENT ADMIN_PORT
  for _ in $(seq 100); do curl -fs "127.0.0.1:$2/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fs "127.0.0.1:$2/readyz" >/dev/null || return 1
  local selector pods p container image now conditions
  selector=$(kubectl get deployment -n "$ns" "$1" -o go-template='{{range $k, $v := .spec.selector.matchLabels}}{{$k}}={{$v}},{{end}}')
  for _ in $(seq 60); do
    [ "$(kubectl get deployment -n "$ns" "$1" -o go-template='{{.metadata.generation}}/{{.spec.replicas}}/{{.spec.replicas}}/{{.spec.replicas}}')" \
      = "$(kubectl get deployment -n "$ns" "$1" -o go-template='{{.status.observedGeneration}}/{{.status.replicas}}/{{.status.updatedReplicas}}/{{.status.readyReplicas}}')" ] \
      && return 0
    pods=$(kubectl get pods -n "$ns" -l "${selector%,}" \
      -o go-template='{{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.name}} {{end}}{{end}}')
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    conditions=$(for c in PodScheduled Initialized ContainersReady Ready; do
      printf '{"type":"%s","status":"True","lastTransitionTime":"%s"},' "$c" "$now"; done)
    for p in $pods; do
      read -r container image < <(kubectl get -n "$ns" pod "$p" -o jsonpath='{.spec.containers[0].name} {.spec.containers[0].image}{"\n"}' 2>/dev/null) || continue
      curl -fs -X PATCH -H 'Content-Type: application/merge-patch+json' \
        "127.0.0.1:28001/api/v1/namespaces/$ns/pods/$p/status" -d "{\"status\":{\"phase\":\"Running\",
          \"conditions\":[${conditions%,}],
          \"containerStatuses\":[{\"name\":\"$container\",\"image\":\"$image\",\"imageID\":\"\",\"ready\":true,
            \"started\":true,\"restartCount\":0,\"state\":{\"running\":{\"startedAt\":\"$now\"}}}]}}" >/dev/null || true
    done
    sleep 0.5
  done
  return 1
}
kubectl proxy --port=28001 >"$run/proxy.log" 2>&1 &
proxy=$!
trap 'kill $proxy 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs 127.0.0.1:28001/version >/dev/null 2>&1 && break; sleep 0.2; done

say "running the gateway locally from the ConfigMap the operator rendered (no kubelet here)"
local_config 29090 >"$run/gateway.yaml"
"$bin/ota-gateway" --config "$run/gateway.yaml" >"$run/gateway.log" 2>&1 &
echo $! >"$run/gateway.pid"
report_ready default 29090 || die "the gateway did not become ready; see $run/gateway.log"

say "1. firmware: a simulated ESP32 running 0.9.0 checks for an update (OtaFlux API)"
answer=""
for _ in $(seq 50); do
  answer=$(curl -fs "127.0.0.1:28080/version?device=esp32-devkit") && break
  sleep 0.2
done
[ -n "$answer" ] || die "the gateway did not answer /version; see $run/gateway.log"
{ read -r version; read -r crc; read -r size; } <<<"$answer"$'\n'
echo "GET /version?device=esp32-devkit -> version=$version crc32=$crc size=$size"
curl -fs "127.0.0.1:28080/firmware?device=esp32-devkit" -o "$run/flashed.bin"
got_crc=$(python3 -c 'import sys,zlib; print(zlib.crc32(open(sys.argv[1],"rb").read()))' "$run/flashed.bin")
got_size=$(stat -c %s "$run/flashed.bin")
[ "$got_crc" = "$crc" ] && [ "$got_size" = "$size" ] || die "downloaded firmware does not match: crc $got_crc size $got_size"
cmp -s "$run/flashed.bin" "$run/esp32-$version.bin" || die "downloaded firmware differs from the pushed $version"
firmware_line="firmware   esp32-devkit gets $version: $got_size bytes, CRC32 $got_crc, identical to what oras pushed"
echo "GET /firmware?device=esp32-devkit -> $got_size bytes, CRC32 $got_crc verified; device flashes $version"

say "2. images: kubectl get imgs -n $ns"
kubectl wait -n "$ns" --for=condition=Ready --timeout=60s imgs/lab-images >/dev/null \
  || die "the ImageStream did not become Ready; see $run/operator.log"
kubectl get imgs -n "$ns"
kubectl get imgs -n "$ns" lab-images -o jsonpath='{range .status.remoteAdd[*]}{@}{"\n"}{end}'

say "incus lists the image from the gateway over HTTPS (the remote the status names, pointed at 127.0.0.1)"
conf="$run/incus"
rm -rf "$conf" && mkdir -p "$conf"
incus_() { INCUS_CONF="$conf" HOME="$run" SSL_CERT_FILE="$pki/ca.pem" incus "$@"; }
url=https://127.0.0.1:28443/streams/lab-images
for _ in $(seq 50); do curl -fs --cacert "$pki/ca.pem" "$url/streams/v1/images.json" | grep -q "$fingerprint" && break; sleep 0.2; done
incus_ remote add lab "$url" --protocol simplestreams --public >/dev/null || die "incus remote add $url failed; see $run/gateway.log"
echo "incus remote add lab $url --protocol simplestreams --public"
echo "incus image list lab:"
incus_ image list lab:
incus_ image list lab: --format csv -c f | grep -q "^${fingerprint:0:12}" \
  || die "incus does not list the image with fingerprint $fingerprint; see $run/gateway.log"
echo "incus shows fingerprint ${fingerprint:0:12}, the sha256 of the two pushed files"
images_line="images     incus image list lab: shows ${fingerprint:0:12} over HTTPS, the sha256 of the two files oras pushed"

say "3. artifacts: uploading a release to the LAN store the way filuxe's client does"
artifact=releases/router-1.2.0.bin
python3 -c 'import hashlib,sys; sys.stdout.buffer.write(b"".join(hashlib.sha256(b"router-1.2.0"+i.to_bytes(4,"big")).digest() for i in range(81920)))' \
  >"$run/router-1.2.0.bin" # 2.5 MiB: three chunks
# filuxe.py --upload (filuxe_api.Filuxe.upload): 1 MiB chunks, each a POST to
# /upload/<path> with params time=<the file's mtime, a Python float> and force=False, and
# headers key, Content-Type, Content-length (the whole file's, which requests replaces
# with the chunk's) and Content-Range; 201 for each chunk.
# requests, filuxe's HTTP library: from the venv `cluster.sh tools` fills, else the system's.
client_python="${UPDRAFT_CACHE:-$HOME/.cache/updraft}/clients-venv/bin/python"
[ -x "$client_python" ] || client_python=python3
"$client_python" -c 'import requests' 2>/dev/null \
  || die "python's requests is missing (cluster.sh tools installs it; or apt-get install python3-requests)"
"$client_python" - "https://127.0.0.1:28082" "$artifact" "$run/router-1.2.0.bin" "$pod/etc/updraft/store-key/key" "$pki/ca.pem" <<'PY'
import os, sys, requests
server, path, filename, key_file, ca = sys.argv[1:6]
write_key = open(key_file).read().strip()
epoch = os.path.getmtime(filename)
size = os.path.getsize(filename)
index = 0
with open(filename, 'rb') as f:
    while True:
        chunk = f.read(1024 * 1024)
        if not chunk:
            break
        offset = index + len(chunk)
        response = requests.post(f'{server}/upload/{path}',
                                 headers={'key': write_key,
                                          'Content-Type': 'application/octet-stream',
                                          'Content-length': str(size),
                                          'Content-Range': f'bytes {index}-{offset - 1}/{size}'},
                                 data=chunk,
                                 params={'time': epoch, 'force': False},
                                 verify=ca)
        print(f'POST /upload/{path}?time={epoch!r}&force=False  Content-Range: bytes {index}-{offset - 1}/{size}'
              f'  -> {response.status_code}')
        if response.status_code != 201:
            sys.exit(f'upload refused: {response.status_code} {response.text}')
        index = offset
PY
sent=$(sha256sum "$run/router-1.2.0.bin" | cut -d' ' -f1)

say "running the mirror worker locally from the same ConfigMap (ota-gateway --mirror)"
local_config 29091 >"$run/mirror.yaml"
SSL_CERT_FILE="$pki/roots.pem" "$bin/ota-gateway" --mirror --config "$run/mirror.yaml" >"$run/mirror.log" 2>&1 &
echo $! >"$run/mirror.pid"
report_ready default-mirror 29091 || die "the mirror worker did not become ready; see $run/mirror.log"
for _ in $(seq 150); do
  curl -fs --cacert "$pki/ca.pem" "https://127.0.0.1:27081/download/$artifact" -o "$run/arrived.bin" 2>/dev/null && break
  sleep 0.2
done
[ -s "$run/arrived.bin" ] || die "$artifact did not arrive at the WAN store; see $run/mirror.log"
arrived=$(sha256sum "$run/arrived.bin" | cut -d' ' -f1)
echo "uploaded to LAN   https://127.0.0.1:28082/upload/$artifact    sha256 $sent"
echo "arrived at WAN    https://127.0.0.1:27081/download/$artifact  sha256 $arrived"
[ "$arrived" = "$sent" ] && cmp -s "$run/arrived.bin" "$run/router-1.2.0.bin" \
  || die "the file at the WAN store differs from the one uploaded"
artifacts_line="artifacts  $artifact: uploaded to the LAN store, forwarded to the WAN store, identical (sha256 ${sent:0:12})"

say "waiting for everything to be Ready (the mirror's status is what the operator observed at both stores)"
kubectl wait -n "$ns" --for=condition=Ready --timeout=60s otagw/default >/dev/null \
  || die "the OtaGateway did not become Ready; see $run/operator.log"
synced_since_start() { # the operator saw the file at both stores, emptied by this run
  local s
  s=$(kubectl get amir -n "$ns" releases-to-wan -o jsonpath='{.status.inSync}/{.status.pending} {.status.lastSync}')
  [ "${s%% *}" = 1/0 ] && [ "${s#* }" != "$s" ] && [ -n "${s#* }" ] && [ "$(date -d "${s#* }" +%s)" -ge "$started" ]
}
for _ in $(seq 300); do # the operator compares the two stores every spec.interval
  synced_since_start && break
  sleep 0.2
done
synced_since_start || die "the ArtifactMirror's status did not see the file at both stores; see $run/operator.log"
kubectl wait -n "$ns" --for=condition=Ready --timeout=5s amir/releases-to-wan >/dev/null \
  || die "the ArtifactMirror is not Ready: $(kubectl get amir -n "$ns" releases-to-wan -o jsonpath='{.status.conditions}')"

say "done in $(($(date +%s) - started)) s: the three jobs"
printf '%s\n' "$firmware_line" "$images_line" "$artifacts_line"
echo
kubectl get otagw,fwc,imgs,amir -n "$ns"
echo
echo "The operator, the two gateways and the mirror worker keep running (quickstart.sh down"
echo "stops them; logs in $run). To use kubectl:"
bash e2e/scripts/cluster.sh env
