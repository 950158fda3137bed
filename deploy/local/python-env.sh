#!/usr/bin/env bash
# Create .venv with the four distributions of this repository installed editable and the pinned dev tools
# (re-run only when a pyproject.toml changes).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
projects=(schemas services/producer services/audit_projector services/query_api)
key=$(cd "$root" && cat pyproject.toml "${projects[@]/%//pyproject.toml}" | sha256sum | cut -c1-16)
stamp="$venv/.installed-$key"
if [ ! -x "$venv/bin/python" ]; then
  echo "[python-env] creating $venv" >&2
  "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ]; then
  echo "[python-env] installing the audit-trail distributions (editable) and the dev tools" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  # Checkouts from before the split had one `audit-trail` distribution providing every package.
  "$venv/bin/python" -m pip uninstall -y -q --disable-pip-version-check audit-trail >/dev/null 2>&1 || true
  editable=()
  for p in "${projects[@]}"; do editable+=(-e "$root/$p"); done
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${editable[@]}" -e "$root[dev]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
