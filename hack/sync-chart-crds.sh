#!/usr/bin/env bash
# Copies the generated CRDs (config/crd/bases, written by `make manifests`) into
# the Helm chart (charts/finch-operator/files/crds). Rerun after every
# `make manifests`; test/install fails while the copies differ.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/config/crd/bases"
dest="$root/charts/finch-operator/files/crds"

mkdir -p "$dest"
rm -f "$dest"/*.yaml
cp "$src"/*.yaml "$dest"/
echo "synced $(ls "$src"/*.yaml | wc -l) CRDs from config/crd/bases into charts/finch-operator/files/crds"
