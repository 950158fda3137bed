#!/usr/bin/env bash
# A Docker engine for the container suite, on loopback only: no bridge, no iptables, no forwarding, no
# masquerading, so no container traffic ever uses a private-range address; every container and build must use
# host networking. Nothing is pulled: a proxy on a closed loopback port makes an accidental pull fail at once.
#
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

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

preflight() {
  command -v dockerd >/dev/null || die "no dockerd: install Debian's docker.io (apt-get install docker.io)"
  command -v docker >/dev/null || die "no docker client"
  [ "$(id -u)" = 0 ] || die "dockerd needs root here (it mounts overlay filesystems and namespaces)"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || die "the kernel offers no overlay filesystem"
  [ -d /sys/fs/cgroup ] || die "no cgroup filesystem mounted at /sys/fs/cgroup"
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
  up) up ;;
  down) down ;;
  preflight) preflight && log "an engine can run here" ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
  *) echo "usage: $0 up|down|preflight|env" >&2; exit 2 ;;
esac
