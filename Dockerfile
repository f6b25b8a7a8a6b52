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

FROM --platform=$BUILDPLATFORM ${BUILDER_IMAGE} AS builder
ARG TARGETOS
ARG TARGETARCH
# The module proxy the build downloads from (empty: Go's default).
ARG GOPROXY
# The release stamped into the binary (internal/version); `make docker-build` passes them.
ARG VERSION=devel
ARG REVISION=

WORKDIR /workspace
# Copy the Go module manifests first and download the modules, so this layer
# is cached until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download

# Copy the Go source (see .dockerignore for what stays out of the context).
COPY . .

# CGO off for a static binary; GOOS/GOARCH from buildx (--platform) when set.
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags="-s -w -X github.com/connectops/finch-operator/internal/version.version=${VERSION} -X github.com/connectops/finch-operator/internal/version.revision=${REVISION}" \
      -o manager ./cmd/manager

# Use distroless as minimal base image to package the manager binary.
# Refer to https://github.com/GoogleContainerTools/distroless for more details.
FROM ${RUNTIME_IMAGE}
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
