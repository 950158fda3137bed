#!/usr/bin/env bash
# Tools the test suite checks the deployment files with, built from their registries and cached per version:
# Helm v4 from the Go module proxy (helm.sh/helm/v4/cmd/helm); axe-core from npm for the browser tests.
#
#   tools.sh helm                 build Helm if it is not cached (waiting for a build under way), print its path
#   tools.sh helm --background    start that build at low priority and return at once (make test does, so the
#                                 build overlaps lint and type checks instead of adding minutes to the suite)
#   tools.sh axe                  install axe-core (pinned) if it is not cached, print the path of axe.min.js
#   tools.sh litewitness          build litewitness and witnessctl (filippo.io/torchwood, pinned) if they are not
#                                 cached, print the folder holding both
#   tools.sh debezium             fetch Debezium's JDBC sink plugin (pinned, checked against Maven Central's SHA-1)
#                                 for the peer bench, print its Kafka Connect plugin path
set -euo pipefail
helm_version=${AUDIT_HELM_VERSION:-v4.3.2}
axe_version=${AUDIT_AXE_VERSION:-4.11.0}
torchwood_version=${AUDIT_TORCHWOOD_VERSION:-v0.6.1}
debezium_version=${AUDIT_DEBEZIUM_VERSION:-3.6.0.Final}
tools=${AUDIT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/audit-trail/tools}
binary="$tools/helm-$helm_version"
log() { printf '[tools] %s\n' "$*" >&2; }

build_helm() {
  exec 9>"$tools/helm.lock"
  flock 9  # one build at a time; a second caller waits for the first and finds the binary
  [ -x "$binary" ] && return
  command -v go >/dev/null || { log "go is needed to build Helm"; exit 1; }
  local build
  build=$(mktemp -d "$tools/build.XXXXXX")
  log "building Helm $helm_version from the Go module proxy (a few minutes, once per machine)"
  (cd "$build" && GOBIN="$build" GOTOOLCHAIN=local nice -n 19 go install "helm.sh/helm/v4/cmd/helm@$helm_version") \
    >"$tools/helm-build.log" 2>&1 || { tail -n 20 "$tools/helm-build.log" >&2; rm -rf "$build"; exit 1; }
  mv "$build/helm" "$binary"
  rm -rf "$build"
}

install_axe() {
  local dir="$tools/axe-core-$axe_version"
  exec 8>"$tools/axe.lock"
  flock 8
  if [ ! -f "$dir/node_modules/axe-core/axe.min.js" ]; then
    command -v npm >/dev/null || { log "npm is needed to install axe-core"; exit 1; }
    log "installing axe-core $axe_version from npm"
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent "axe-core@$axe_version" >&2
  fi
  echo "$dir/node_modules/axe-core/axe.min.js"
}

build_litewitness() {
  local dir="$tools/torchwood-$torchwood_version"
  exec 7>"$tools/torchwood.lock"
  flock 7
  if [ ! -x "$dir/litewitness" ] || [ ! -x "$dir/witnessctl" ]; then
    command -v go >/dev/null || { log "go is needed to build litewitness"; exit 1; }
    local build
    build=$(mktemp -d "$tools/build.XXXXXX")
    log "building litewitness and witnessctl $torchwood_version from the Go module proxy"
    (cd "$build" && GOBIN="$build" GOTOOLCHAIN=local nice -n 10 go install \
      "filippo.io/torchwood/cmd/litewitness@$torchwood_version" "filippo.io/torchwood/cmd/witnessctl@$torchwood_version") \
      >"$tools/torchwood-build.log" 2>&1 || { tail -n 20 "$tools/torchwood-build.log" >&2; rm -rf "$build"; exit 1; }
    mkdir -p "$dir"
    mv "$build/litewitness" "$build/witnessctl" "$dir/"
    rm -rf "$build"
  fi
  echo "$dir"
}

install_debezium() {
  local dir="$tools/debezium-$debezium_version" name="debezium-connector-jdbc-$debezium_version-plugin.tar.gz"
  local url="https://repo1.maven.org/maven2/io/debezium/debezium-connector-jdbc/$debezium_version/$name"
  exec 6>"$tools/debezium.lock"
  flock 6
  if [ ! -d "$dir/debezium-connector-jdbc" ]; then
    log "fetching Debezium's JDBC sink $debezium_version from Maven Central"
    local work
    work=$(mktemp -d "$tools/fetch.XXXXXX")
    curl -fsSL --retry 3 -o "$work/$name" "$url" && curl -fsSL --retry 3 -o "$work/$name.sha1" "$url.sha1" \
      || { rm -rf "$work"; log "cannot fetch $url"; exit 1; }
    echo "$(cut -c1-40 "$work/$name.sha1")  $work/$name" | sha1sum -c --quiet - \
      || { rm -rf "$work"; log "$name does not match Maven Central's SHA-1"; exit 1; }
    mkdir -p "$work/plugins" && tar xzf "$work/$name" -C "$work/plugins"
    rm -rf "$dir" && mv "$work/plugins" "$dir" && rm -rf "$work"
  fi
  echo "$dir"
}

case "${1:-}" in
  debezium)
    mkdir -p "$tools"
    install_debezium ;;
  litewitness)
    mkdir -p "$tools"
    build_litewitness ;;
  axe)
    mkdir -p "$tools"
    install_axe ;;
  helm)
    mkdir -p "$tools"
    if [ "${2:-}" = --background ]; then
      [ -x "$binary" ] || (build_helm </dev/null >/dev/null 2>&1 &)
      exit 0
    fi
    build_helm
    echo "$binary" ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
