#!/usr/bin/env bash
# Every fuzz target (the property tests of core/tests/fuzz_parsers.rs,
# ota-gateway/tests/fuzz_*.rs and operator/tests/fuzz_*.rs, run through e2e::fuzz) for
# UPDRAFT_FUZZ_SECS seconds each, one target at a time, and a summary of their
# `FUZZ <target>: N cases in S s, 0 panics` lines.
#
#   bash e2e/scripts/fuzz.sh                          # 600 s per target (the campaign)
#   UPDRAFT_FUZZ_SECS=20 bash e2e/scripts/fuzz.sh     # a quick look
#
# Without UPDRAFT_FUZZ_SECS, `cargo test` runs each target for proptest's default case
# count (CI). Needs the local registry (cluster.sh up) for the gateway targets.
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(bash e2e/scripts/cluster.sh env)"
export UPDRAFT_FUZZ_SECS="${UPDRAFT_FUZZ_SECS:-600}"
log="$(mktemp -t updraft-fuzz.XXXXXX)"
status=0
run() { cargo test "$@" -- --test-threads 1 --nocapture 2>&1 | tee -a "$log" || status=1; }
run -p updraft-core --test fuzz_parsers
for t in ota-gateway/tests/fuzz_*.rs; do run -p ota-gateway --test "$(basename "$t" .rs)"; done
for t in operator/tests/fuzz_*.rs; do run -p updraft-operator --test "$(basename "$t" .rs)"; done
echo "== summary (${UPDRAFT_FUZZ_SECS} s per target; full log: $log)"
grep -oE 'FUZZ [a-z0-9-]+: .*' "$log" || true
exit "$status"
