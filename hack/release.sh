#!/usr/bin/env bash
# `make release VERSION=vX.Y.Z REGISTRY=ghcr.io/connectops`: builds every release artifact into
# dist/ and pushes the images and the chart to REGISTRY (docs/releasing.md lists them).
#
#   VERSION     the release, vX.Y.Z (make passes `git describe` by default)
#   REVISION    the commit stamped into binaries and labels (default HEAD)
#   REGISTRY    where images and the chart go: REGISTRY/finch-operator, REGISTRY/finch-simulator,
#               oci://REGISTRY/charts/finch-operator (default ghcr.io/connectops). It must accept
#               pushes from this machine (`docker login`, `helm registry login`); a registry on
#               127.0.0.1 or localhost is spoken to over plain HTTP.
#   PLATFORMS   image platforms (default "linux/amd64 linux/arm64")
#   LDFLAGS     the Go linker flags (make passes its own: -s -w and the version stamps)
#
# Images: one `docker build` per platform and target (the Dockerfile cross-compiles on the
# engine's platform and its runtime stages have no RUN, so no emulation), each pushed under
# VERSION-<arch>, then one OCI index per image under VERSION (crane index append). A multi-platform
# `docker buildx build --push` would need a BuildKit container (docker-container driver) pulled
# from Docker Hub; the engine's built-in BuildKit (Debian's docker.io, no buildx) builds one
# platform at a time, and crane assembles the index from what the registry holds.
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
VERSION=${VERSION:?VERSION=vX.Y.Z}
[[ $VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$ ]] ||
  { echo "release: VERSION=$VERSION is not vMAJOR.MINOR.PATCH[-PRE]" >&2; exit 1; }
chart_app_version=$(awk '$1 == "appVersion:" { gsub(/"/, "", $2); print $2 }' charts/finch-operator/Chart.yaml)
# A final release (no pre-release suffix) must be the one the committed chart and docs name.
if [[ $VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] && [ "$VERSION" != "$chart_app_version" ]; then
  echo "release: VERSION=$VERSION but charts/finch-operator/Chart.yaml says appVersion $chart_app_version; bump the chart (and CHANGELOG.md) first" >&2
  exit 1
fi
REVISION=${REVISION:-$(git rev-parse HEAD)}
REGISTRY=${REGISTRY:-ghcr.io/connectops}
PLATFORMS=${PLATFORMS:-linux/amd64 linux/arm64}
PLUGIN_PLATFORMS="linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64"
LDFLAGS=${LDFLAGS:-"-s -w -X github.com/connectops/finch-operator/internal/version.version=$VERSION -X github.com/connectops/finch-operator/internal/version.revision=$REVISION"}
# The commit's time: archives, labels and the SBOM of one commit do not change with the clock.
CREATED=$(git log -1 --format=%cI "$REVISION")
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct "$REVISION")
export SOURCE_DATE_EPOCH
CHART_VERSION=${VERSION#v}
DIST=$root/dist
OPERATOR=$REGISTRY/finch-operator
SIMULATOR=$REGISTRY/finch-simulator
host=${REGISTRY%%/*}
plain_http=()
case "$host" in localhost | localhost:* | 127.* | \[::1\]*) plain_http=(--plain-http) ;; esac

started=$(date +%s)
step() { printf '\n=== %s (%ss)\n' "$*" "$(($(date +%s) - started))"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step "tools: crane, helm (hack/tools.versions)"
for t in crane helm; do "$root/hack/tool.sh" "$t"; done
crane=$root/bin/crane
helm=$root/bin/helm

rm -rf "$DIST"
mkdir -p "$DIST"

# image REPO TARGET: one build and push per platform, then the index under VERSION.
image() {
  local repo=$1 target=$2 platform arch manifests=()
  for platform in $PLATFORMS; do
    arch=${platform#*/}
    arch=${arch//\//-}
    step "image $repo:$VERSION-$arch (--target $target --platform $platform)"
    IMG="$repo:$VERSION-$arch" TARGET=$target PLATFORM=$platform VERSION=$VERSION REVISION=$REVISION CREATED=$CREATED \
      "$root/hack/docker-build.sh" >"$tmp/build.log" 2>&1 || { tail -n 40 "$tmp/build.log" >&2; exit 1; }
    grep -E '^(image-bases|docker-build):' "$tmp/build.log" >&2 || true
    docker push -q "$repo:$VERSION-$arch" >/dev/null
    manifests+=(-m "$repo@$("$crane" digest "$repo:$VERSION-$arch")")
  done
  step "index $repo:$VERSION (${PLATFORMS})"
  # crane reads each manifest's platform from its image config into the index.
  "$crane" index append "${manifests[@]}" -t "$repo:$VERSION" >/dev/null
  echo "$repo:$VERSION@$("$crane" digest "$repo:$VERSION")" >>"$DIST/images.txt"
}
image "$OPERATOR" manager
image "$SIMULATOR" finch-simulator
operator_digest=$("$crane" digest "$OPERATOR:$VERSION")

step "chart oci://$REGISTRY/charts/finch-operator:$CHART_VERSION"
# The packaged chart's default image is this release's: REGISTRY/finch-operator, tag appVersion.
cp -r charts/finch-operator "$tmp/finch-operator"
sed -i "s#^\(  repository: \)ghcr.io/connectops/finch-operator\$#\1$OPERATOR#" "$tmp/finch-operator/values.yaml"
grep -q "^  repository: $OPERATOR\$" "$tmp/finch-operator/values.yaml" ||
  { echo "release: could not set image.repository in the chart's values.yaml" >&2; exit 1; }
"$helm" package "$tmp/finch-operator" --version "$CHART_VERSION" --app-version "$VERSION" -d "$DIST" >/dev/null
"$helm" push "${plain_http[@]}" "$DIST/finch-operator-$CHART_VERSION.tgz" "oci://$REGISTRY/charts"

step "dist/install.yaml (image pinned by digest), dist/crds.yaml"
make -s build-installer IMG="$OPERATOR@$operator_digest" >/dev/null
kubectl kustomize config/crd >"$DIST/crds.yaml"

step "kubectl finch archives ($PLUGIN_PLATFORMS)"
for platform in $PLUGIN_PLATFORMS; do
  os=${platform%/*}
  arch=${platform#*/}
  name=kubectl-finch_${os}_${arch}
  bin=kubectl-finch
  [ "$os" = windows ] && bin=kubectl-finch.exe
  mkdir -p "$tmp/$name"
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags "$LDFLAGS" -o "$tmp/$name/$bin" ./cmd/kubectl-finch
  cp LICENSE "$tmp/$name/LICENSE"
  cp plugins/README.md "$tmp/$name/README.md"
  # The completion shim (kubectl 1.26+ runs kubectl_complete-<plugin> for `kubectl finch <TAB>`).
  if [ -f plugins/kubectl_complete-finch ]; then
    install -m 0755 plugins/kubectl_complete-finch "$tmp/$name/kubectl_complete-finch"
  fi
  # Reproducible: sorted names, root-owned, the commit's time, no gzip timestamp.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$tmp/$name" -cf - . | gzip -9n >"$DIST/$name.tar.gz"
  echo "  $name.tar.gz $(du -h "$DIST/$name.tar.gz" | cut -f1)"
done

step "dist/finch.yaml (Krew manifest from plugins/finch.yaml)"
{
  echo "# Generated by hack/release.sh from plugins/finch.yaml for $VERSION; do not edit."
  sed -e '/^#/d' -e "s/{{VERSION}}/$VERSION/g" plugins/finch.yaml
} >"$tmp/finch.yaml"
for f in $(grep -o '{{SHA256 [^}]*}}' "$tmp/finch.yaml" | sed 's/{{SHA256 \(.*\)}}/\1/' | sort -u); do
  [ -f "$DIST/$f" ] || { echo "release: plugins/finch.yaml names $f, which the release did not build" >&2; exit 1; }
  sum=$(sha256sum "$DIST/$f" | cut -d' ' -f1)
  sed -i "s/{{SHA256 $f}}/$sum/g" "$tmp/finch.yaml"
done
if grep -n '{{' "$tmp/finch.yaml" >&2; then
  echo "release: placeholders left in the Krew manifest" >&2
  exit 1
fi
mv "$tmp/finch.yaml" "$DIST/finch.yaml"

step "dist/finch-operator.cdx.json (CycloneDX SBOM of the manager)"
"$root/hack/tool.sh" cyclonedx-gomod
# The manager binary's modules as linux/amd64 builds them (the arm64 build has the same modules).
# It reads the main module's version from git, and its git library cannot open a linked worktree
# (.git is a file there): it then reads a clone of the commit.
src=$root
if [ -f "$root/.git" ]; then
  git clone -q --no-checkout "$root" "$tmp/src"
  git -C "$tmp/src" checkout -q "$REVISION"
  src=$tmp/src
fi
(cd "$src" && GOOS=linux GOARCH=amd64 "$root/bin/cyclonedx-gomod" app -json -licenses -main cmd/manager \
  -output "$DIST/finch-operator.cdx.json" .) 2>"$tmp/sbom.log" || { cat "$tmp/sbom.log" >&2; exit 1; }

step "dist/checksums.txt"
(cd "$DIST" && find . -maxdepth 1 -type f ! -name checksums.txt -printf '%f\n' | LC_ALL=C sort | xargs sha256sum) >"$tmp/checksums.txt"
mv "$tmp/checksums.txt" "$DIST/checksums.txt"

step "released $VERSION to $REGISTRY"
cat "$DIST/images.txt"
echo "chart oci://$REGISTRY/charts/finch-operator --version $CHART_VERSION"
(cd "$DIST" && ls -l | awk 'NR > 1 { printf "  %-40s %10d\n", $9, $5 }')
