#!/usr/bin/env bash
# Updraft's whole test suite, from a fresh machine: installs what the tests need,
# starts the local control plane and registry (cluster.sh), then runs every test of
# the workspace (unit, gateway-against-registry, operator end-to-end, conformance).
# Formatting (seconds) is checked before anything is installed; clippy (about one
# `cargo check` of the workspace) gates the test build.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
step() { printf '\033[1m[test]\033[0m %s (%ss)\n' "$*" "$(( $(date +%s) - start ))" >&2; }

step "format: cargo fmt --check (rustfmt.toml)"
cargo fmt --all --check

step "local control plane and registry"
bash e2e/scripts/cluster.sh up >/dev/null
step "client tools (oras, skopeo, nginx, wrk, helm)"
bash e2e/scripts/cluster.sh tools
eval "$(bash e2e/scripts/cluster.sh env)"

step "lints: cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# cargo-deny is built once (a few minutes) into ~/.cache/updraft and reused; the check
# itself takes seconds and needs no network (deny.toml says what is allowed).
step "licences, bans and sources: cargo deny --frozen check (deny.toml)"
deny="$HOME/.cache/updraft/cargo-deny/bin/cargo-deny"
if [ ! -x "$deny" ]; then
  cargo install --locked cargo-deny --version 0.20.2 --root "$HOME/.cache/updraft/cargo-deny"
fi
"$deny" --frozen check --hide-inclusion-graph licenses bans sources

step "cargo test --workspace"
cargo test --workspace --locked "$@"
step "all tests passed"
