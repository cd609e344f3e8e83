#!/usr/bin/env bash
# Updraft's whole test suite, from a fresh machine: installs what the tests need,
# starts the local control plane and registry (cluster.sh), then runs every test of
# the workspace (unit, gateway-against-registry, operator end-to-end, conformance).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
step() { printf '\033[1m[test]\033[0m %s (%ss)\n' "$*" "$(( $(date +%s) - start ))" >&2; }

step "local control plane and registry"
bash e2e/scripts/cluster.sh up >/dev/null
step "client tools (oras, skopeo, nginx, wrk, helm)"
bash e2e/scripts/cluster.sh tools
eval "$(bash e2e/scripts/cluster.sh env)"

step "cargo test --workspace"
cargo test --workspace --locked "$@"
step "all tests passed"
