#!/usr/bin/env bash
# Builds Updraft's container images without a Docker engine and pushes them.
#
#   images.sh [build|push]   build: release binaries → one OCI image layout per binary
#                            push (default): build, then copy each image to the registry
#
# Each image is one gzip layer holding the release binary at /usr/local/bin, the shared
# libraries `ldd` says it needs (glibc, libgcc_s...) and the dynamic loader, at their
# paths on this machine; /etc/passwd and /etc/group with the `nonroot` user (65532, as in
# distroless), the CA bundle and an empty /tmp. The config runs the binary as 65532.
# Layers and configs are byte-reproducible (sorted tar, zero mtimes, `gzip -n`), so an
# unchanged binary gives the same digests; an image whose binary and recipe did not
# change is not reassembled, and one the registry already holds is not pushed again.
#
# Environment:
#   UPDRAFT_REGISTRY      host:port of the plain-HTTP registry (default 127.0.0.1:15000)
#   UPDRAFT_IMAGE_PREFIX  repository prefix in it (default updraft): updraft/operator,
#                         updraft/ota-gateway
#   UPDRAFT_IMAGE_TAG     tag (default: the version the binary reports, e.g. 0.1.0)
#   CARGO_TARGET_DIR      where cargo builds; the image layouts go to $CARGO_TARGET_DIR/images
#
# Output (stdout), one line per image:
#   <name> <registry>/<repository>:<tag> <manifest digest> <built|unchanged> <pushed|present|->
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET/images"
REGISTRY="${UPDRAFT_REGISTRY:-127.0.0.1:15000}"
PREFIX="${UPDRAFT_IMAGE_PREFIX:-updraft}"
MODE="${1:-push}"

say() { printf '\033[1m[images]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[images] error:\033[0m %s\n' "$*" >&2; exit 1; }

case "$MODE" in build | push) ;; *) die "unknown command '$MODE' (use: build, push)" ;; esac
for tool in sha256sum gzip tar ldd stat; do command -v "$tool" >/dev/null || die "$tool is missing"; done
[ "$MODE" = build ] || command -v skopeo >/dev/null || die "skopeo is missing (bash e2e/scripts/cluster.sh tools)"

case "$(uname -m)" in
  x86_64) ARCH=amd64 ;;
  aarch64) ARCH=arm64 ;;
  *) die "unsupported machine $(uname -m)" ;;
esac

# Anything here changing must rebuild the images, even with the same binary.
RECIPE=$(sha256sum "$0" | cut -d' ' -f1)

say "cargo build --release (a no-op when the binaries are current)"
cargo build --release --locked -p updraft-operator -p ota-gateway --bins >&2

sha() { sha256sum "$1" | cut -d' ' -f1; }

# The manifest digest an image layout's index.json names.
manifest_digest() { grep -o '"digest":"sha256:[0-9a-f]*"' "$1/index.json" | head -n1 | cut -d'"' -f4; }

# Moves FILE into the layout's blob store; prints its digest.
blob() {
  local layout=$1 file=$2 d
  d=$(sha "$file")
  mv "$file" "$layout/blobs/sha256/$d"
  echo "$d"
}

# Copies the shared libraries and loader BIN needs into ROOTFS, at the same paths.
copy_libraries() {
  local bin=$1 rootfs=$2 line path
  if ! ldd "$bin" >/dev/null 2>&1; then
    say "$(basename "$bin") is statically linked"
    return 0
  fi
  while read -r line; do
    case "$line" in
      *"=> not found"*) die "$(basename "$bin") needs a library this machine lacks: $line" ;;
      *"=> /"*) path=${line#*=> }; path=${path%% (*} ;;
      /*) path=${line%% (*} ;; # the dynamic loader
      *) continue ;;           # linux-vdso.so.1 lives in the kernel
    esac
    mkdir -p "$rootfs$(dirname "$path")"
    cp -L "$path" "$rootfs$path"
  done < <(ldd "$bin")
}

# build NAME BINARY: assembles $OUT/NAME (an OCI image layout) unless it is current.
build() {
  local name=$1 bin=$2 layout="$OUT/$1" tag stamp
  [ -x "$bin" ] || die "$bin was not built"
  tag="${UPDRAFT_IMAGE_TAG:-$("$bin" --version | awk '{print $2}')}"
  [[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "'$tag' is not an image tag"
  stamp="binary=$(sha "$bin") recipe=$RECIPE arch=$ARCH tag=$tag"
  if [ -f "$layout/.stamp" ] && [ "$(cat "$layout/.stamp")" = "$stamp" ] && [ -f "$layout/index.json" ]; then
    STATE=unchanged
    TAG=$tag
    return 0
  fi
  say "assembling $name:$tag from $bin"
  rm -rf "$layout"
  mkdir -p "$layout/blobs/sha256"
  local work; work=$(mktemp -d)
  local rootfs="$work/rootfs"
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  cp "$bin" "$rootfs/usr/local/bin/"
  local bin_name; bin_name=$(basename "$bin")
  copy_libraries "$bin" "$rootfs"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"

  # A reproducible layer: sorted names, zero times, root-owned (the image runs as 65532).
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$rootfs" -cf "$work/layer.tar" .
  local diff_id; diff_id=$(sha "$work/layer.tar")
  gzip -n -6 <"$work/layer.tar" >"$work/layer.tar.gz"
  local layer_size; layer_size=$(stat -c %s "$work/layer.tar.gz")
  local layer; layer=$(blob "$layout" "$work/layer.tar.gz")

  # JSON by hand (no jq on a fresh machine); every value here is a plain token.
  printf '%s' '{"created":"1970-01-01T00:00:00Z","architecture":"'"$ARCH"'","os":"linux",' \
    '"config":{"User":"65532:65532","Entrypoint":["/usr/local/bin/'"$bin_name"'"],' \
    '"Env":["PATH=/usr/local/bin:/usr/bin:/bin","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],' \
    '"WorkingDir":"/","Labels":{"org.opencontainers.image.title":"'"$name"'",' \
    '"org.opencontainers.image.version":"'"$tag"'",' \
    '"org.opencontainers.image.source":"https://github.com/updraft-dev/updraft",' \
    '"org.opencontainers.image.licenses":"Apache-2.0"}},' \
    '"rootfs":{"type":"layers","diff_ids":["sha256:'"$diff_id"'"]},' \
    '"history":[{"created":"1970-01-01T00:00:00Z","created_by":"e2e/scripts/images.sh"}]}' >"$work/config.json"
  local config_size; config_size=$(stat -c %s "$work/config.json")
  local config; config=$(blob "$layout" "$work/config.json")

  printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",' \
    '"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'"$config"'","size":'"$config_size"'},' \
    '"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:'"$layer"'","size":'"$layer_size"'}]}' \
    >"$work/manifest.json"
  local manifest_size; manifest_size=$(stat -c %s "$work/manifest.json")
  local manifest; manifest=$(blob "$layout" "$work/manifest.json")

  echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",' \
    '"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:'"$manifest"'",' \
    '"size":'"$manifest_size"',"annotations":{"org.opencontainers.image.ref.name":"'"$tag"'"}}]}' >"$layout/index.json"
  echo "$stamp" >"$layout/.stamp"
  rm -rf "$work"
  STATE=built
  TAG=$tag
}

# push NAME: copies $OUT/NAME to the registry unless it holds that manifest already.
push() {
  local name=$1 layout="$OUT/$1" digest remote
  digest=$(manifest_digest "$layout")
  local ref="$REGISTRY/$PREFIX/$name:$TAG"
  remote=$(skopeo inspect --raw --tls-verify=false "docker://$ref" 2>/dev/null | sha256sum | cut -d' ' -f1 || true)
  if [ "sha256:$remote" = "$digest" ]; then
    PUSHED=present
    return 0
  fi
  say "pushing $ref"
  skopeo copy --quiet --dest-tls-verify=false "oci:$layout:$TAG" "docker://$ref" >&2 \
    || die "skopeo copy to $ref failed"
  remote=$(skopeo inspect --raw --tls-verify=false "docker://$ref" | sha256sum | cut -d' ' -f1)
  [ "sha256:$remote" = "$digest" ] || die "$ref has manifest sha256:$remote after the push, expected $digest"
  PUSHED=pushed
}

mkdir -p "$OUT"
for pair in operator:updraft-operator ota-gateway:ota-gateway; do
  name=${pair%%:*}
  build "$name" "$TARGET/release/${pair#*:}"
  PUSHED=-
  [ "$MODE" = push ] && push "$name"
  echo "$name $REGISTRY/$PREFIX/$name:$TAG $(manifest_digest "$OUT/$name") $STATE $PUSHED"
done
