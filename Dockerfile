# syntax=docker/dockerfile:1.7
# Aegis container images: one build stage compiles every binary as a static musl
# executable; one target per component copies its binary alone into an empty image.
#
#   docker build --target safe      -t ghcr.io/shieldworks/aegis-safe:0.1.0 .
#   docker build --target webhook   -t ghcr.io/shieldworks/aegis-webhook:0.1.0 .
#   docker build --target init-shim -t ghcr.io/shieldworks/aegis-init-shim:0.1.0 .
#   docker build --target cli       -t ghcr.io/shieldworks/aegis:0.1.0 .
#
# (`make docker-images` runs the four.) Without a Docker engine, `make images` builds the
# same images with umoci from the same static binaries (images/build-oci.sh).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# ring builds C and assembly: musl-gcc makes it link against musl. The cache mounts keep
# the registry and target dir between builds; binaries are copied out of the cache.
# The shim is built alone: built with the others, unified rustls features grow it past 2 MiB.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    export CC_x86_64_unknown_linux_musl=musl-gcc \
 && cargo build --release --locked --target x86_64-unknown-linux-musl -p aegis-init-shim \
 && cargo build --release --locked --target x86_64-unknown-linux-musl \
      -p aegis-safe -p aegis-webhook -p aegis-cli \
 && mkdir /out \
 && for bin in aegis-safe aegis-webhook aegis-init-shim aegis; do \
      cp "target/x86_64-unknown-linux-musl/release/$bin" /out/; \
    done

# Shared by every image: OCI labels. VERSION and REVISION come from the build command
# (`make docker-images` passes them).
FROM scratch AS base
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/shieldworks/aegis" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Shieldworks"
ENV PATH=/
WORKDIR /
# Numeric, so Kubernetes can verify runAsNonRoot without an /etc/passwd.
USER 65532:65532

FROM base AS safe
LABEL org.opencontainers.image.title="aegis-safe" \
      org.opencontainers.image.description="Aegis Safe: encrypted, durable secret store"
COPY --from=build --chmod=0555 /out/aegis-safe /aegis-safe
ENTRYPOINT ["/aegis-safe"]
CMD ["serve"]

FROM base AS webhook
LABEL org.opencontainers.image.title="aegis-webhook" \
      org.opencontainers.image.description="Aegis webhook: injects the init-shim into annotated pods"
COPY --from=build --chmod=0555 /out/aegis-webhook /aegis-webhook
ENTRYPOINT ["/aegis-webhook"]
CMD ["serve"]

# The webhook's init container runs `/aegis-init-shim install /aegis/bin`: no shell needed.
FROM base AS init-shim
LABEL org.opencontainers.image.title="aegis-init-shim" \
      org.opencontainers.image.description="Aegis init-shim: fetches a workload's secrets and execs its entrypoint"
COPY --from=build --chmod=0555 /out/aegis-init-shim /aegis-init-shim
ENTRYPOINT ["/aegis-init-shim"]

# The Sentinel: `kubectl exec deploy/aegis-sentinel -- aegis secret put ...` finds
# /aegis through PATH=/.
FROM base AS cli
LABEL org.opencontainers.image.title="aegis" \
      org.opencontainers.image.description="Aegis CLI (the Sentinel): administers secrets"
COPY --from=build --chmod=0555 /out/aegis /aegis
ENTRYPOINT ["/aegis"]
CMD ["idle"]
