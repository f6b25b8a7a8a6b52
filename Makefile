# finch-connect-operator
#
#   make test   - unit and envtest tests (builds the envtest control plane once)
#   make test-e2e - the container image, run as the Deployment runs it (needs a Docker engine or root)
#   make test-release - a release pushed to a local OCI registry and installed from it as a user would
#   make verify - generated files and docs, go.mod, gofmt, go vet and golangci-lint (what CI checks before tests)
#   make demo   - one-command local demo on a real API server and the Finch simulator
#   make help   - everything else

# One version, stamped everywhere (binaries, image labels, chart, Krew manifest):
# a release tag vX.Y.Z; between tags `git describe` gives vX.Y.Z-N-gREV.
VERSION ?= $(shell git describe --tags --match 'v*' --always --dirty 2>/dev/null || echo devel)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -s -w -X github.com/connectops/finch-operator/internal/version.version=$(VERSION) -X github.com/connectops/finch-operator/internal/version.revision=$(REVISION)
IMG ?= ghcr.io/connectops/finch-operator:latest
# Where `make release` pushes the images and the chart.
REGISTRY ?= ghcr.io/connectops
K8S_VERSION ?= $(shell awk '$$1 == "K8S_VERSION" { print $$3 }' hack/tools.versions)
ENVTEST_DIR := $(CURDIR)/bin/k8s/$(K8S_VERSION)-$(shell go env GOOS)-$(shell go env GOARCH)
CONTROLLER_GEN := go tool controller-gen
GOLANGCI_LINT := $(CURDIR)/bin/golangci-lint
GO_TEST_FLAGS ?= -count=1

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: ## Generate CRDs and RBAC from kubebuilder markers (and copy the CRDs, alerts and dashboard into the Helm chart).
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./api/..." paths="./controllers/..." paths="./internal/..." output:crd:artifacts:config=config/crd/bases
	./hack/sync-chart-crds.sh
	./hack/sync-monitoring.sh

.PHONY: chart-docs
chart-docs: ## Generate charts/finch-operator/README.md from README.md.gotmpl and values.yaml's `# --` comments (helm-docs).
	./hack/tool.sh helm-docs
	./bin/helm-docs --chart-search-root charts --skip-version-footer --log-level warning

.PHONY: generate
generate: ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="" paths="./api/..."

.PHONY: docs
docs: ## Generate docs/reference (manager flags from its FlagSet, API from the CRDs); committed, make verify fails on drift.
	go run ./hack/docs/flags > docs/reference/flags.md.tmp && mv docs/reference/flags.md.tmp docs/reference/flags.md
	go run ./hack/docs/api config/crd/bases > docs/reference/api.md.tmp && mv docs/reference/api.md.tmp docs/reference/api.md

.PHONY: docs-kubectl-finch
docs-kubectl-finch: ## Generate docs/reference/kubectl-finch/ (one page per kubectl finch command) from the plugin's command tree.
	go run ./internal/kubectlfinch/gendocs docs/reference/kubectl-finch

.PHONY: fmt
fmt: ## gofmt the tree.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet.
	go vet ./...

.PHONY: lint
lint: golangci-lint ## Run golangci-lint (config: .golangci.yml).
	$(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: golangci-lint actionlint ## Pre-merge checks: generated files committed, go.mod tidy, gofmt, go vet, lint, actionlint, example modules, pkg/ API changes.
	./hack/verify.sh

.PHONY: apidiff
apidiff: ## Report exported-API changes of pkg/... since the last release tag (incompatible ones fail).
	./hack/apidiff.sh

.PHONY: golangci-lint
golangci-lint: ## Build golangci-lint from the Go module proxy into bin/golangci-lint (no-op when present).
	./hack/golangci-lint.sh

.PHONY: actionlint
actionlint: ## Build actionlint (checks .github/workflows) from the Go module proxy into bin/actionlint (no-op when present).
	./hack/tool.sh actionlint

.PHONY: envtest
envtest: ## Build kube-apiserver and etcd from the Go module proxy into bin/k8s (no-op when present).
	K8S_VERSION=$(K8S_VERSION) ./hack/envtest.sh

.PHONY: helm
helm: ## Build the helm CLI from the Go module proxy into bin/helm (no-op when present).
	./hack/helm.sh

.PHONY: promtool
promtool: ## Build promtool (alerting rule checks and unit tests) from the Go module proxy into bin/promtool (no-op when present).
	./hack/promtool.sh

.PHONY: test
test: envtest helm promtool chromium ## Run all tests against a real API server (envtest) and the Finch simulator, the browser tests in headless Chromium, and the example modules.
	KUBEBUILDER_ASSETS=$(ENVTEST_DIR) ./hack/test.sh $(GO_TEST_FLAGS) -tags=browser ./...

.PHONY: chromium
chromium: ## Make sure headless Chromium is there for test/browser (as root: installs Debian's chromium when missing).
	./hack/chromium.sh >/dev/null

.PHONY: test-e2e
test-e2e: envtest helm build-installer ## Build the image and run it as the Deployment does (needs root or a Docker engine).
	./hack/test-e2e.sh

.PHONY: test-release
test-release: envtest helm ## Release to a registry on 127.0.0.1 and install from it as a user would (needs a Docker engine or root).
	./hack/test-release.sh

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 30s).
	./hack/fuzz.sh $${FUZZTIME:-30s}

##@ Build

.PHONY: build
build: ## Build the manager, the Finch simulator and the kubectl finch plugin into bin/.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o bin/manager ./cmd/manager
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o bin/finchsim ./cmd/finchsim
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o bin/kubectl-finch ./cmd/kubectl-finch

.PHONY: run
run: manifests generate ## Run the manager against the cluster in ~/.kube/config.
	go run ./cmd/manager

.PHONY: demo
demo: envtest build ## One-command local demo (DEMO_KEEP=1 keeps it running).
	./hack/demo.sh

.PHONY: bench
bench: envtest build ## Scale and Finch-economy benchmark (BENCH_N, default 2000).
	./hack/bench.sh

.PHONY: soak
soak: envtest build ## Resilience soak under Finch faults and manager kills (SOAK_N, default 500).
	./hack/soak.sh

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine; makes local bases when no registry answers).
	IMG=$(IMG) VERSION=$(VERSION) REVISION=$(REVISION) ./hack/docker-build.sh

.PHONY: release
release: ## Build dist/ and push the images and chart to REGISTRY (VERSION=vX.Y.Z; docs/releasing.md).
	VERSION=$(VERSION) REVISION=$(REVISION) REGISTRY=$(REGISTRY) LDFLAGS="$(LDFLAGS)" ./hack/release.sh

.PHONY: build-installer
build-installer: manifests ## Write dist/install.yaml (CRDs, RBAC, Deployment, Services).
	mkdir -p dist
	kubectl kustomize config/default | sed 's#^\( *image: \)ghcr.io/connectops/finch-operator:latest$$#\1$(IMG)#' > dist/install.yaml
	@[ "$$(grep -c '^ *image: $(IMG)$$' dist/install.yaml)" = 1 ] || { echo "build-installer: the Deployment's image was not set to $(IMG)" >&2; exit 1; }

.PHONY: install
install: manifests ## Install the CRDs into the cluster in ~/.kube/config.
	kubectl apply --server-side -f config/crd/bases

.PHONY: deploy
deploy: build-installer ## Deploy the operator into the cluster in ~/.kube/config.
	kubectl apply --server-side -f dist/install.yaml
