# Build the manager binary.
#
# The two bases are build arguments so a machine without registry access can
# build from local stand-ins (hack/image-bases.sh, used by `make docker-build`
# and `make test-e2e`); the defaults are the real images.
#
# No `# syntax=` line: it would make every BuildKit build fetch the
# docker/dockerfile frontend from Docker Hub, and this file needs nothing
# beyond the frontend built into the engine.
ARG BUILDER_IMAGE=golang:1.26
ARG RUNTIME_IMAGE=gcr.io/distroless/static:nonroot

# Two images from one file: the default target is the manager (the last
# stage); `--target finch-simulator` is the Finch simulator (cmd/finchsim).
# Both compile on $BUILDPLATFORM for $TARGETARCH (Go cross-compiles, no
# emulation) and their runtime stages have no RUN, so an arm64 image builds
# on an amd64 machine without QEMU.
FROM --platform=$BUILDPLATFORM ${BUILDER_IMAGE} AS source
# The module proxy the build downloads from (empty: Go's default).
ARG GOPROXY
WORKDIR /workspace
# Copy the Go module manifests first and download the modules, so this layer
# is cached until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download

# Copy the Go source (see .dockerignore for what stays out of the context).
COPY . .

FROM source AS builder
ARG TARGETOS
ARG TARGETARCH
# The release stamped into the binary (internal/version); `make docker-build` passes them.
ARG VERSION=devel
ARG REVISION=
# CGO off for a static binary; -s -w strip the symbol table and DWARF.
# GOOS/GOARCH from --platform when set.
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags="-s -w -X github.com/connectops/finch-operator/internal/version.version=${VERSION} -X github.com/connectops/finch-operator/internal/version.revision=${REVISION}" \
      -o manager ./cmd/manager

FROM source AS simulator-builder
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=devel
ARG REVISION=
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags="-s -w -X github.com/connectops/finch-operator/internal/version.version=${VERSION} -X github.com/connectops/finch-operator/internal/version.revision=${REVISION}" \
      -o finchsim ./cmd/finchsim

# The Finch simulator, for trying the operator without Finch credentials
# (docs/simulator.md). It listens on 8090 on every interface.
FROM ${RUNTIME_IMAGE} AS finch-simulator
ARG VERSION=devel
ARG REVISION=
ARG CREATED=
LABEL org.opencontainers.image.title="finch-simulator" \
      org.opencontainers.image.description="A Finch API simulator for testing the finch-operator" \
      org.opencontainers.image.source="https://github.com/connectops/finch-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
WORKDIR /
COPY --from=simulator-builder /workspace/LICENSE /LICENSE
COPY --from=simulator-builder /workspace/finchsim /finchsim
USER 65532:65532
EXPOSE 8090
ENTRYPOINT ["/finchsim"]
CMD ["--addr=:8090"]

# The manager (the default target: the last stage).
# Use distroless as minimal base image to package the manager binary.
# Refer to https://github.com/GoogleContainerTools/distroless for more details.
FROM ${RUNTIME_IMAGE} AS manager
ARG VERSION=devel
ARG REVISION=
ARG CREATED=
# OCI annotations (https://github.com/opencontainers/image-spec/blob/main/annotations.md).
LABEL org.opencontainers.image.title="finch-operator" \
      org.opencontainers.image.description="Kubernetes operator for Finch employer connections" \
      org.opencontainers.image.source="https://github.com/connectops/finch-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
WORKDIR /
COPY --from=builder /workspace/LICENSE /LICENSE
COPY --from=builder /workspace/manager /manager
USER 65532:65532

ENTRYPOINT ["/manager"]
