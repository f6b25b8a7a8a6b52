#!/usr/bin/env bash
# Builds the helm CLI at its pin (hack/tools.versions) into bin/helm.
exec "$(dirname "$0")/tool.sh" helm
