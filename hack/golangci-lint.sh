#!/usr/bin/env bash
# Builds golangci-lint v2 at its pin (hack/tools.versions) into bin/golangci-lint,
# with the project's Go toolchain, so it understands the Go version in go.mod.
exec "$(dirname "$0")/tool.sh" golangci-lint
