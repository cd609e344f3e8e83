#!/usr/bin/env bash
# Soak of the gateway binary under mixed load (wrk on /version, 1 MB downloads at 100 MB/s,
# a config reload every 2 s, the registry down 1 s in 4, a chunked upload to one store
# every second and the mirror worker forwarding them to a second store), sampling RSS,
# open fds and threads of the gateway and the worker every second; asserts them flat,
# no failed request or upload, every upload forwarded byte for byte and p99 /version
# within 2x of idle, and prints the figures. The test is ota-gateway/tests/faults_soak.rs.
# The gateway runs on a core of its own (one tokio worker, as in a 1-CPU pod) and the load
# generators on another; the 2x bound still wants the machine otherwise quiet.
#
#   bash e2e/scripts/soak.sh                         # 60 s, as CI runs it
#   UPDRAFT_SOAK_SECS=1800 bash e2e/scripts/soak.sh  # 30 minutes, by hand
#
# Needs the local registry (cluster.sh up) and wrk (cluster.sh tools).
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(bash e2e/scripts/cluster.sh env)"
export UPDRAFT_SOAK_SECS="${UPDRAFT_SOAK_SECS:-60}"
exec cargo test -p ota-gateway --test faults_soak -- --nocapture
