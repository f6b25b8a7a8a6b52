#!/usr/bin/env bash
# Builds promtool (Prometheus's rule checker and rule unit-test runner) at its
# pin (hack/tools.versions) into bin/promtool, so go.mod stays free of the
# Prometheus server's dependencies.
exec "$(dirname "$0")/tool.sh" promtool
