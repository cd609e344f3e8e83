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
step "client tools (oras, skopeo, nginx, wrk, helm, prometheus)"
bash e2e/scripts/cluster.sh tools
eval "$(bash e2e/scripts/cluster.sh env)"

step "lints: cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# cargo-deny is built once (a few minutes) into ~/.cache/updraft and reused; the check
# itself takes seconds and needs no network (deny.toml says what is allowed).
#
# It reads the metadata of every target's crates, while `cargo build` fetches only the
# host's: on a fresh machine `--frozen` failed on crates no build had downloaded
# (`valuable`, `android_system_properties`). So the check runs against a cargo home of its
# own that nothing but `cargo fetch --locked` fills: if an offline step ever needs a crate
# that fetch does not bring, CI fails here on every machine, warm or cold.
step "licences, bans and sources: cargo deny --frozen check (deny.toml), in a cargo home filled only by cargo fetch --locked"
deny="$HOME/.cache/updraft/cargo-deny/bin/cargo-deny"
if [ ! -x "$deny" ]; then
  cargo install --locked cargo-deny --version 0.20.2 --root "$HOME/.cache/updraft/cargo-deny"
fi
fetched_home="$HOME/.cache/updraft/cargo-home-fetched"
CARGO_HOME="$fetched_home" cargo fetch --locked --quiet
CARGO_HOME="$fetched_home" "$deny" --frozen check --hide-inclusion-graph licenses bans sources

step "cargo test --workspace"
cargo test --workspace --locked "$@"
step "all tests passed"
