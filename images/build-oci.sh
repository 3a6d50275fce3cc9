#!/usr/bin/env bash
# Build the Aegis container images without a Docker engine, with umoci, from static
# musl binaries that already exist. Produces the same images as the Dockerfile targets:
# FROM scratch, the binary alone at /<binary>, numeric USER 65532:65532, OCI labels.
#
# Usage:
#   images/build-oci.sh --bin-dir DIR --out DIR [--version V] [--revision R] [COMPONENT...]
#
#   --bin-dir DIR   where the static binaries are (default: target/x86_64-unknown-linux-musl/release)
#   --out DIR       one OCI image layout per image is written to DIR/<image> (default: target/oci)
#   --version V     image tag and org.opencontainers.image.version (default: workspace version)
#   --revision R    org.opencontainers.image.revision (default: git HEAD, else "unknown")
#   COMPONENT       safe | webhook | init-shim | cli   (default: all four)
#
# Reproducible: file times, history and config dates come from SOURCE_DATE_EPOCH
# (default: the last commit's time), so the same binaries give the same image digests.
#
# Result, e.g. for init-shim: DIR/aegis-init-shim is an OCI image layout with tag V.
# Load it into kind with:
#   skopeo copy oci:target/oci/aegis-init-shim:V docker-archive:target/aegis-init-shim.tar:ghcr.io/shieldworks/aegis-init-shim:V
#   kind load image-archive target/aegis-init-shim.tar --name aegis
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="$repo/target/x86_64-unknown-linux-musl/release"
out="$repo/target/oci"
version=""
revision=""
components=()

die() { echo "build-oci: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin-dir) bin_dir="${2:?--bin-dir needs a directory}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --version) version="${2:?--version needs a value}"; shift 2 ;;
    --revision) revision="${2:?--revision needs a value}"; shift 2 ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) components+=("$1"); shift ;;
  esac
done
[[ ${#components[@]} -gt 0 ]] || components=(safe webhook init-shim cli)

for tool in umoci readelf; do
  command -v "$tool" >/dev/null || die "'$tool' is required (apt-get install ${tool/readelf/binutils})"
done

if [[ -z "$version" ]]; then
  version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)"
  [[ -n "$version" ]] || die "cannot read the workspace version from Cargo.toml; pass --version"
fi
if [[ -z "$revision" ]]; then
  revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
fi
epoch="${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}"
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"

# component -> binary (also the image name, except the CLI's), entrypoint args, description
describe() {
  case "$1" in
    safe) binary=aegis-safe; image=aegis-safe; cmd=(serve)
          title="Aegis Safe: encrypted, durable secret store" ;;
    webhook) binary=aegis-webhook; image=aegis-webhook; cmd=(serve)
          title="Aegis webhook: injects the init-shim into annotated pods" ;;
    init-shim) binary=aegis-init-shim; image=aegis-init-shim; cmd=()
          title="Aegis init-shim: fetches a workload's secrets and execs its entrypoint" ;;
    cli) binary=aegis; image=aegis; cmd=(idle)
          title="Aegis CLI (the Sentinel): administers secrets" ;;
    *) die "unknown component '$1' (safe, webhook, init-shim, cli)" ;;
  esac
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

for component in "${components[@]}"; do
  describe "$component"
  bin="$bin_dir/$binary"
  [[ -f "$bin" ]] || die "$bin not found: build it with \`make musl\` (or pass --bin-dir)"
  # FROM scratch has no loader or libc: the binary must be static.
  if readelf -l "$bin" 2>/dev/null | grep -q 'INTERP'; then
    die "$bin is dynamically linked; build it for x86_64-unknown-linux-musl"
  fi
  readelf -h "$bin" | grep -q 'Advanced Micro Devices X86-64' || die "$bin is not an x86-64 ELF binary"

  layout="$out/$image"
  ref="$layout:$version"
  bundle="$work/$image"
  rm -rf "$layout"
  umoci init --layout "$layout"
  umoci new --image "$ref"
  umoci unpack --rootless --image "$ref" "$bundle"
  install -m 0555 "$bin" "$bundle/rootfs/$binary"
  touch -h -d "@$epoch" "$bundle/rootfs/$binary" "$bundle/rootfs"
  umoci repack --image "$ref" \
    --history.created "$created" --history.created_by "COPY $binary /$binary" "$bundle"

  config_args=(
    --config.entrypoint "/$binary"
    --config.user "65532:65532"
    --config.env "PATH=/"
    --config.workingdir "/"
    --os linux --architecture amd64
    --created "$created" --author "Shieldworks"
    --history.created "$created" --history.created_by "USER 65532:65532, ENTRYPOINT [\"/$binary\"]"
  )
  for arg in "${cmd[@]}"; do config_args+=(--config.cmd "$arg"); done
  for kv in \
    "org.opencontainers.image.title=$image" \
    "org.opencontainers.image.description=$title" \
    "org.opencontainers.image.version=$version" \
    "org.opencontainers.image.revision=$revision" \
    "org.opencontainers.image.created=$created" \
    "org.opencontainers.image.source=https://github.com/shieldworks/aegis" \
    "org.opencontainers.image.licenses=Apache-2.0" \
    "org.opencontainers.image.vendor=Shieldworks"; do
    config_args+=(--config.label "$kv" --manifest.annotation "$kv")
  done
  umoci config --image "$ref" "${config_args[@]}"
  umoci gc --layout "$layout"
  rm -rf "$bundle"
  echo "built $image:$version -> $layout ($(du -sh "$layout" | cut -f1))"
done
