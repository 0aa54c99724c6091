#!/usr/bin/env bash
# Lints the deployment files without a Docker engine: docker-compose.yml against the Compose
# Specification's JSON schema (check-jsonschema's vendored copy) and the Dockerfiles with hadolint.
# Installs both from PyPI into deploy/lint/.venv (git-ignored) the first time.
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
echo "deployment files: lint passed"
