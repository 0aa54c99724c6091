#!/usr/bin/env bash
# The interoperability suite in one command: installs panva's oidc-provider and the official MCP SDKs
# (TypeScript from npm, Python 1.x and 2.x from PyPI, each pinned) into folders of this directory that
# git ignores, builds the bridge if needed, and runs every client against it (orchestrate.py).
#
# usage: tests/interop/run.sh          (from anywhere; MCP_OAUTH_BRIDGE_BIN overrides the binary)
set -euo pipefail
caller="$PWD"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

python="${PYTHON:-python3}"
for tool in node npm "$python"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "interop: $tool is required" >&2; exit 1; }
done
# Glewlwyd, the second provider (Debian packages glewlwyd, sqlite3, openssl), unless left out;
# installed here when missing and apt-get may be used (as root, as in CI).
if [[ " $* " != *" --no-glewlwyd "* && " $* " != *" --no-typescript "* ]]; then
  if ! command -v glewlwyd >/dev/null 2>&1 || ! command -v sqlite3 >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      echo "== interop: Debian packages glewlwyd sqlite3 openssl"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq glewlwyd sqlite3 openssl >/dev/null
      # The package starts a system service on all interfaces with a default admin: not ours.
      (systemctl disable --now glewlwyd || service glewlwyd stop) >/dev/null 2>&1 || true
    fi
  fi
  for tool in glewlwyd sqlite3 openssl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "interop: $tool is required (or pass --no-glewlwyd)" >&2; exit 1; }
  done
fi

# Everything stays in folders of the suite; nothing local goes through a proxy.
export npm_config_cache="$here/work/npm-cache"
export PIP_NO_CACHE_DIR=1
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

echo "== interop: npm packages (package-lock.json)"
npm ci --no-audit --no-fund --loglevel=error

# One virtualenv per SDK line, rebuilt only when its pinned requirements change.
venv() {
  local name="$1" requirements="$here/requirements/$1.txt" dir="$here/.venv-$1"
  local stamp="$dir/.requirements.sha256" want
  want="$(sha256sum "$requirements" | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "== interop: Python virtualenv $name"
    rm -rf "$dir"
    "$python" -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$requirements"
    echo "$want" >"$stamp"
  fi
}
venv mcp1
venv mcp2

bridge="${MCP_OAUTH_BRIDGE_BIN:-}"
if [[ -n "$bridge" ]]; then
  bridge="$(cd "$caller" && realpath "$bridge")"
else
  echo "== interop: cargo build"
  (cd "$repo" && cargo build --locked --quiet)
  bridge="$repo/target/debug/mcp-oauth-bridge"
fi

echo "== interop: running"
exec "$python" orchestrate.py \
  --bridge "$bridge" \
  --mcp-server-python "$here/.venv-mcp1/bin/python" \
  --python-sdk "python-sdk-1=$here/.venv-mcp1/bin/python" \
  --python-sdk "python-sdk-2=$here/.venv-mcp2/bin/python" \
  "$@"
