#!/usr/bin/env bash
# Updraft's main job on one machine: a local Kubernetes control plane and OCI registry,
# Updraft's CRDs and sample resources, shown with kubectl.
set -euo pipefail
cd "$(dirname "$0")/../.."
ns=updraft-demo
say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

say "starting the local control plane and registry (first run builds kube-apiserver, ~8 min)"
bash e2e/scripts/cluster.sh up >/dev/null
eval "$(bash e2e/scripts/cluster.sh env)"

say "installing Updraft's CRDs"
kubectl apply --server-side --force-conflicts -f crds/crds.yaml
kubectl wait --for=condition=Established --timeout=30s crd --all >/dev/null

say "applying the samples into namespace $ns"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null
kubectl apply --server-side -n "$ns" -f crds/samples/

say "kubectl get otagw,fwc,imgs,amir -n $ns"
kubectl get otagw,fwc,imgs,amir -n "$ns"

say "done; to use kubectl yourself:"
bash e2e/scripts/cluster.sh env
