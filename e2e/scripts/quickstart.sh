#!/usr/bin/env bash
# Updraft's main job on one machine, from nothing:
#   a local Kubernetes control plane (kube-apiserver 1.20 + etcd + controller-manager)
#   and OCI registry → Updraft's CRDs → firmware pushed with oras → the operator
#   resolving it → the gateway serving the ConfigMap the operator rendered → a
#   simulated ESP32 asking for an update over the OtaFlux API and flashing it → an
#   LXD/Incus image pushed with oras, listed by `incus image list` over HTTPS from the
#   same gateway (an ImageStream).
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

say "a test CA and a certificate for 127.0.0.1 (incus and lxc accept only https remotes)"
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
(cd "$img" && oras push --plain-http "$UPDRAFT_REGISTRY/images/lab:20260101_0000" "meta-$fingerprint.tar.xz" "$fingerprint.squashfs" >/dev/null) \
  || die "oras push of the image failed"

say "applying the samples into namespace $ns (the gateway with HTTPS from a kubernetes.io/tls Secret)"
kubectl create secret tls gateway-cert -n "$ns" --cert="$pki/tls.crt" --key="$pki/tls.key" --dry-run=client -o yaml \
  | kubectl apply --server-side -f - >/dev/null
kubectl apply --server-side -n "$ns" -f crds/samples/
kubectl apply --server-side --field-manager=quickstart -n "$ns" -f - <<'EOF_GW' >/dev/null
apiVersion: updraft.dev/v1alpha1
kind: OtaGateway
metadata: {name: default}
spec:
  tls: {secretName: gateway-cert}
EOF_GW
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
for _ in $(seq 100); do # until the rendered config serves the stream over https too
  kubectl get configmap -n "$ns" default-config -o jsonpath='{.data.gateway\.yaml}' 2>/dev/null \
    | grep -q "name: lab-images" && kubectl get configmap -n "$ns" default-config -o jsonpath='{.data.gateway\.yaml}' | grep -q "^tls:" && break
  sleep 0.2
done
kubectl get configmap -n "$ns" default-config -o jsonpath='{.data.gateway\.yaml}' \
  | sed -e 's/^listen: .*/listen: 127.0.0.1:38080/' -e 's/^adminListen: .*/adminListen: 127.0.0.1:39090/' \
        -e 's/^  listen: 0.0.0.0:8443$/  listen: 127.0.0.1:38443/' -e "s#/etc/updraft/tls/#$pki/#" \
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

say "the ImageStream: kubectl get imgs -n $ns"
kubectl wait -n "$ns" --for=condition=Ready --timeout=60s imgs/lab-images >/dev/null \
  || die "the ImageStream did not become Ready; see $run/operator.log"
kubectl get imgs -n "$ns"
kubectl get imgs -n "$ns" lab-images -o jsonpath='{range .status.remoteAdd[*]}{@}{"\n"}{end}'

say "incus lists the image from the gateway over HTTPS (the remote the status names, pointed at 127.0.0.1)"
conf="$run/incus"
rm -rf "$conf" && mkdir -p "$conf"
incus_() { INCUS_CONF="$conf" HOME="$run" SSL_CERT_FILE="$pki/ca.pem" incus "$@"; }
url=https://127.0.0.1:38443/streams/lab-images
for _ in $(seq 50); do curl -fs --cacert "$pki/ca.pem" "$url/streams/v1/images.json" | grep -q "$fingerprint" && break; sleep 0.2; done
incus_ remote add lab "$url" --protocol simplestreams --public >/dev/null || die "incus remote add $url failed; see $run/gateway.log"
echo "incus remote add lab $url --protocol simplestreams --public"
echo "incus image list lab:"
incus_ image list lab:
incus_ image list lab: --format csv -c f | grep -q "^${fingerprint:0:12}" \
  || die "incus does not list the image with fingerprint $fingerprint; see $run/gateway.log"
echo "incus shows fingerprint ${fingerprint:0:12}, the sha256 of the two pushed files"

say "done. The operator and gateway keep running (quickstart.sh down stops them). To use kubectl:"
bash e2e/scripts/cluster.sh env
