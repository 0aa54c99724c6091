"""Starts the interoperability suite's processes — panva's oidc-provider, the bridge, an MCP server
built with the Python SDK — runs every SDK client scenario against them, and stops every process it
started, by PID, whatever happens. Everything binds to 127.0.0.1 on free ports. Standard library only;
`run.sh` installs the SDKs and calls this.
"""

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import glewlwyd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCOPE = "mcp:tools"
# What the proxy asks of calls to the guarded tool (proxy.tool_scopes), and that tool.
ADMIN_SCOPE = "mcp:admin"
GUARDED_TOOL = "purge_cache"
# Whether each SDK line registers again by itself when the bridge has forgotten its registration
# (`401 invalid_client` on refresh). The Python SDKs keep the dead client_id and send the user to our
# authorization endpoint with it; the suite then checks our error page and re-registers as a host
# application would. A change either way fails the suite, so it is noticed and the README updated.
EXPECTED_REREGISTRATION = {"python-sdk-1": "no", "python-sdk-2": "no", "typescript-sdk": "yes"}
# Short enough that the suite sees tokens expire; long enough for a sign-in to finish first.
ACCESS_TOKEN_TTL_SECONDS = 8
# The provider's access tokens: the bridge renews one it keeps once under 30 s are left, so the
# token-exchange scenario sees a renewal after some 10 s.
PROVIDER_ACCESS_TOKEN_TTL_SECONDS = 40
# The proxied MCP server's credentials at the bridge, for its token exchanges.
EXCHANGING_SERVER = "reports-mcp"
EXCHANGING_SECRET = "reports-mcp-secret-0123456789"
CLIENT_TIMEOUT_SECONDS = 240


try:
    # Resolved before any fork: the child only makes the call.
    _PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """Linux: the child gets SIGTERM when the orchestrator dies, however it dies."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url, what, process, timeout=30.0, accept=(200,)):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status in accept:
                    return
        except urllib.error.HTTPError as error:
            if error.code in accept:
                return
            last = error
        except OSError as error:
            last = error
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready at {url} after {timeout}s: {last}")


def wait_for_line(path, text, process, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what}: no {text!r} in {path} after {timeout}s")


class Processes:
    """Every process the suite launched, stopped by PID on exit."""

    def __init__(self, logs):
        self.logs = logs
        self.running = {}

    def start(self, name, command, env=None, stdin=None, stdout=None):
        with open(self.logs / f"{name}.log", "ab") as log:
            return self._start(name, command, env, stdin, stdout, log)

    def _start(self, name, command, env, stdin, stdout, log):
        process = subprocess.Popen(
            command,
            cwd=HERE,
            env={**os.environ, **(env or {})},
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else log,
            stderr=log,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.running[name] = process
        return process

    def stop(self, name):
        process = self.running.pop(name, None)
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop_all(self):
        for name in list(self.running):
            self.stop(name)


def common_bridge_config(bridge_port, provider_issuer, proxied_mcp_port, client_secret, oauth_extra="",
                         proxy_extra="", scopes=(SCOPE,), upstream_extra=""):
    """What both bridges share: the port, a configured key, DCR, the provider, memory storage and a
    proxy to an MCP server of their own; `oauth_extra`, `upstream_extra` and `proxy_extra` are YAML
    lines added to those sections."""
    # With the trailing slash: the MCP server (Python SDK 1.x) names its authorization server
    # `http://host:port/` in its metadata, and SDK 2.x clients require the identical string.
    issuer = f"http://127.0.0.1:{bridge_port}/"
    key_file = REPO / "tests" / "fixtures" / "signing_es256.pem"
    scopes_supported = ", ".join(["openid", "profile", "email", "offline_access"] + [f'"{s}"' for s in scopes])
    return f"""
server:
  address: "127.0.0.1:{bridge_port}"
  public_url: "{issuer}"
oauth:
  # A configured key: access tokens stay valid across the restart the suite performs.
  signing: {{ algorithm: ES256, key_file: "{key_file}" }}
  access_token_ttl: {ACCESS_TOKEN_TTL_SECONDS}s
  scopes_supported: [{scopes_supported}]
  # The MCP server shows who calls it: every token carries these, and the consent page says so.
  access_token_claims: [email, name, groups]
{oauth_extra}  dcr:
    enabled: true
    allowed_redirect_profiles: [loopback]
    rate_limit: {{ requests: 100, window: 1m }}
  upstream:
    issuer: "{provider_issuer}"
    client_id: mcp-oauth-bridge
    client_secret: "{client_secret}"
    scopes: [openid, email, profile, groups]
    claims: {{ groups: groups }}
    allowed_groups: [mcp-users]
{upstream_extra}storage:
  backend: memory
proxy:
  upstream_url: "http://127.0.0.1:{proxied_mcp_port}"
  path: /mcp
  required_scopes: ["{SCOPE}"]
{proxy_extra}  identity_jwt: {{ header: X-Forwarded-Identity }}
"""


def bridge_config(bridge_port, idp_port, mcp_port, proxied_mcp_port, client_secret, enterprise_jwks):
    """The main bridge: panva's oidc-provider upstream, a resource that validates tokens itself,
    an enterprise IdP's ID-JAGs, a guarded tool behind its proxy, and the MCP server there acting
    for its callers downstream by token exchange."""
    oauth_extra = f"""  resources: ["http://127.0.0.1:{mcp_port}/mcp"]
  clients:
    # Enterprise-Managed Authorization: trades ID-JAGs from the enterprise IdP of oidc_client.mjs.
    - {{ id: enterprise-agent, secret: "enterprise-agent-secret-0123456789",
        grant_types: ["urn:ietf:params:oauth:grant-type:jwt-bearer"] }}
    # The proxied MCP server, exchanging its callers' tokens (RFC 8693).
    - {{ id: {EXCHANGING_SERVER}, secret: "{EXCHANGING_SECRET}",
        grant_types: ["urn:ietf:params:oauth:grant-type:token-exchange"] }}
  token_exchange:
    rules:
      - {{ client: {EXCHANGING_SERVER}, audiences: ["http://127.0.0.1:{mcp_port}/mcp", upstream],
          scopes: [openid, email, "{SCOPE}"] }}
  identity_assertion:
    trusted_issuers:
      - {{ issuer: "https://idp.corp.example", jwks: {enterprise_jwks}, allowed_groups: [mcp-users] }}
"""
    proxy_extra = f"""  tool_scopes:
    - {{ method: tools/call, name: {GUARDED_TOOL}, scopes: ["{ADMIN_SCOPE}"] }}
  forward_access_token: true
"""
    return common_bridge_config(bridge_port, f"http://127.0.0.1:{idp_port}/realms/test", proxied_mcp_port,
                                client_secret, oauth_extra, proxy_extra, scopes=(SCOPE, ADMIN_SCOPE),
                                upstream_extra="    keep_tokens: true\n")


def glewlwyd_bridge_config(bridge_port, provider_issuer, proxied_mcp_port, client_secret):
    """A second bridge, with Glewlwyd as its provider, guarding its own MCP server."""
    return common_bridge_config(bridge_port, provider_issuer, proxied_mcp_port, client_secret)


def start_glewlwyd(processes, work, users, mcp_server_python):
    """Glewlwyd, configured, with a bridge in front of an MCP server of its own; returns the
    bridge's issuer and its starter."""
    provider_port, bridge_port, mcp_port = free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{bridge_port}/"
    secret = "glewlwyd-upstream-client-secret"
    config_file = glewlwyd.prepare(work / "glewlwyd", provider_port)
    provider = processes.start("glewlwyd", ["glewlwyd", f"--config-file={config_file}"])
    # Any answer will do: the API is up (the plugin that serves discovery comes with configure()).
    wait_for(f"http://127.0.0.1:{provider_port}/api/mod/type/", "glewlwyd", provider, accept=(200, 401, 403, 404))
    glewlwyd.configure(provider_port, work / "glewlwyd", users, "mcp-oauth-bridge", secret, f"{issuer}oauth/callback")
    mcp = processes.start("glewlwyd-mcp-server", [
        mcp_server_python, "mcp_server.py", "--port", str(mcp_port), "--issuer", issuer,
        "--jwks-uri", f"{issuer}oauth/jwks", "--scope", SCOPE, "--behind-proxy"])
    wait_for(f"http://127.0.0.1:{mcp_port}/mcp", "the MCP server behind the Glewlwyd bridge", mcp,
             accept=(200, 400, 405, 406))
    bridge_config = work / "bridge-glewlwyd.yaml"
    bridge_config.write_text(glewlwyd_bridge_config(bridge_port, glewlwyd.issuer(provider_port), mcp_port, secret))
    return issuer, bridge_config


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bridge", required=True, help="the mcp-oauth-bridge binary")
    parser.add_argument("--python-sdk", action="append", default=[], metavar="LABEL=PYTHON",
                        help="a Python interpreter with one MCP SDK line installed")
    parser.add_argument("--mcp-server-python", required=True, help="the interpreter that runs the MCP server")
    parser.add_argument("--no-typescript", action="store_true")
    parser.add_argument("--only", help="run only the client scenarios whose name contains this")
    parser.add_argument("--no-glewlwyd", action="store_true", help="leave out the Glewlwyd provider")
    args = parser.parse_args()

    work = HERE / "work"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("*.log"):
        old.unlink()

    processes = Processes(logs)

    def interrupted(signum, _frame):
        processes.stop_all()
        sys.exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, interrupted)

    bridge_port, idp_port, mcp_port, proxied_mcp_port = free_port(), free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{bridge_port}/"
    # The same clients twice: against an MCP server that validates tokens itself, and through
    # the bridge's proxy to one that has no authentication of its own.
    server_urls = {"": f"http://127.0.0.1:{mcp_port}/mcp", "proxied-": f"{issuer}mcp"}
    client_secret = "interop-upstream-client-secret"
    config = work / "bridge.yaml"
    # The enterprise IdP's public keys, from the script that mints its ID-JAGs.
    enterprise_jwks = subprocess.run(["node", "oidc_client.mjs", "enterprise-jwks"], cwd=HERE, check=True,
                                     capture_output=True, text=True).stdout.strip()
    config.write_text(bridge_config(bridge_port, idp_port, mcp_port, proxied_mcp_port, client_secret,
                                    enterprise_jwks))

    def bridge_starter(name, config_file, issuer_url):
        """Starts (or restarts) one bridge and waits until it has discovered its provider."""
        def start():
            processes.stop(name)
            log = logs / f"{name}.log"
            before = log.read_text(errors="replace").count("upstream provider discovered") if log.exists() else 0
            process = processes.start(name, [args.bridge, "--config", str(config_file), "serve"],
                                      env={"RUST_LOG": "info,mcp_oauth_bridge=debug"})
            wait_for(f"{issuer_url}healthz", name, process)
            deadline = time.monotonic() + 30
            while log.read_text(errors="replace").count("upstream provider discovered") <= before:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{name} did not discover the upstream provider")
                time.sleep(0.1)
        return start

    start_bridge = bridge_starter("bridge", config, issuer)

    failures = []
    try:
        idp = processes.start("idp", ["node", "idp.mjs", "--port", str(idp_port), "--client-secret", client_secret,
                                      "--redirect-uri", f"{issuer}oauth/callback",
                                      "--access-token-ttl", str(PROVIDER_ACCESS_TOKEN_TTL_SECONDS),
                                      "--backchannel-logout-uri", f"{issuer}oauth/backchannel-logout"])
        wait_for(f"http://127.0.0.1:{idp_port}/realms/test/.well-known/openid-configuration", "oidc-provider", idp)
        start_bridge()
        mcp = processes.start("mcp-server", [args.mcp_server_python, "mcp_server.py", "--port", str(mcp_port),
                                             "--issuer", issuer, "--jwks-uri", f"{issuer}oauth/jwks", "--scope", SCOPE])
        wait_for(f"http://127.0.0.1:{mcp_port}/.well-known/oauth-protected-resource/mcp", "the MCP server", mcp)
        proxied = processes.start("proxied-mcp-server", [
            args.mcp_server_python, "mcp_server.py", "--port", str(proxied_mcp_port), "--issuer", issuer,
            "--jwks-uri", f"{issuer}oauth/jwks", "--scope", SCOPE, "--behind-proxy",
            "--exchange-as", f"{EXCHANGING_SERVER}:{EXCHANGING_SECRET}",
            "--provider-issuer", f"http://127.0.0.1:{idp_port}/realms/test", "--api-url", server_urls[""]])
        wait_for(f"http://127.0.0.1:{proxied_mcp_port}/mcp", "the MCP server behind the proxy", proxied,
                 accept=(200, 400, 405, 406))

        clients = []
        for prefix, server_url in server_urls.items():
            for entry in args.python_sdk:
                label, python = entry.split("=", 1)
                for scenario in ("flow", "denied"):
                    clients.append((f"{prefix}{label}-{scenario}",
                                    [python, "py_client.py", scenario, "--server-url", server_url, "--issuer", issuer],
                                    start_bridge))
            if args.python_sdk:
                label, python = args.python_sdk[0].split("=", 1)
                clients.append((f"{prefix}resource-server",
                                [python, "py_client.py", "resource-server", "--server-url", server_url,
                                 "--issuer", issuer], start_bridge))
        if args.python_sdk:
            # The proxied server calls the provider and a second resource as its caller (RFC 8693).
            label, python = args.python_sdk[0].split("=", 1)
            clients.append(("proxied-token-exchange",
                            [python, "py_client.py", "exchange", "--server-url", server_urls["proxied-"],
                             "--issuer", issuer, "--api-url", server_urls[""]], start_bridge))
            if not args.no_typescript:
                for scenario in ("flow", "denied"):
                    clients.append((f"{prefix}typescript-sdk-{scenario}",
                                    ["node", "ts_client.mjs", scenario, "--server-url", server_url, "--issuer", issuer],
                                    start_bridge))

        if not args.no_typescript:
            # A strict OpenID Connect relying party: the bridge as a web application's provider.
            clients.append(("oauth4webapi-oidc", ["node", "oidc_client.mjs", "flow", "--issuer", issuer], start_bridge))
            clients.append(("oauth4webapi-private-key-jwt",
                            ["node", "oidc_client.mjs", "private-key-jwt", "--issuer", issuer], start_bridge))
            # Per-tool scopes: refused the guarded tool with 403, the SDK steps up and succeeds.
            clients.append(("proxied-typescript-sdk-step-up",
                            ["node", "ts_client.mjs", "step-up", "--server-url", server_urls["proxied-"],
                             "--issuer", issuer, "--scope", ADMIN_SCOPE, "--tool", GUARDED_TOOL], start_bridge))
            clients.append(("enterprise-id-jag", ["node", "oidc_client.mjs", "id-jag", "--issuer", issuer,
                                                  "--server-url", server_urls["proxied-"]], start_bridge))
            # The user signs out at the provider: its logout token ends the grant at the bridge.
            clients.append(("oauth4webapi-backchannel-logout",
                            ["node", "oidc_client.mjs", "backchannel-logout", "--issuer", issuer,
                             "--server-url", server_urls["proxied-"],
                             "--idp-issuer", f"http://127.0.0.1:{idp_port}/realms/test"], start_bridge))

        glewlwyd_scenarios = [f"glewlwyd-typescript-sdk-{scenario}" for scenario in ("flow", "denied")]
        # Glewlwyd and its bridge start only when one of their scenarios runs.
        glewlwyd_selected = any(not args.only or args.only in name for name in glewlwyd_scenarios)
        if not args.no_glewlwyd and not args.no_typescript and glewlwyd_selected:
            users = json.loads((HERE / "users.json").read_text())
            glewlwyd_issuer, glewlwyd_config = start_glewlwyd(processes, work, users, args.mcp_server_python)
            start_glewlwyd_bridge = bridge_starter("bridge-glewlwyd", glewlwyd_config, glewlwyd_issuer)
            start_glewlwyd_bridge()
            # The same SDK flow with a second certified provider upstream.
            for name in glewlwyd_scenarios:
                clients.append((name, ["node", "ts_client.mjs", name.rsplit("-", 1)[1], "--server-url",
                                       f"{glewlwyd_issuer}mcp", "--issuer", glewlwyd_issuer, "--provider", "glewlwyd"],
                                start_glewlwyd_bridge))

        for name, command, restart_bridge in clients:
            if args.only and args.only not in name:
                continue
            print(f"== {name}", flush=True)
            process = processes.start(name, command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            ok = run_client(process, name, restart_bridge)
            processes.running.pop(name, None)
            if not ok:
                failures.append(name)
                print(f"FAIL {name} (its stderr: {logs / (name + '.log')})", flush=True)
                tail(logs / f"{name}.log")
    except Exception as error:  # noqa: BLE001 - reported, then the processes are stopped
        failures.append(f"setup: {error}")
        print(f"FAIL setup: {error}", flush=True)
        for log in sorted(logs.glob("*.log")):
            tail(log)
    finally:
        processes.stop_all()

    if failures:
        print(f"interop suite FAILED: {', '.join(failures)} (logs in {logs})", flush=True)
        sys.exit(1)
    print("interop suite passed", flush=True)


def run_client(process, name, restart_bridge):
    """Relays the client's output and restarts its bridge when it asks; a client that hangs is
    killed after CLIENT_TIMEOUT_SECONDS."""
    watchdog = threading.Timer(CLIENT_TIMEOUT_SECONDS, lambda: kill_group(process))
    watchdog.start()
    reregistered = None
    try:
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            print(f"  {line}", flush=True)
            if line.startswith("RESULT ") and "reregistered_by_sdk=" in line:
                reregistered = line.rsplit("=", 1)[1]
            if line == "RESTART":
                restart_bridge()
                process.stdin.write(b"RESTARTED\n")
                process.stdin.flush()
        code = process.wait()
    finally:
        watchdog.cancel()
    kill_group(process)
    if code == -signal.SIGKILL:
        print(f"  {name} took longer than {CLIENT_TIMEOUT_SECONDS}s and was killed", flush=True)
    if code == 0 and name.endswith("-flow"):
        sdk = name.removeprefix("glewlwyd-").removeprefix("proxied-").removesuffix("-flow")
        expected = EXPECTED_REREGISTRATION.get(sdk)
        if reregistered != expected:
            print(f"  {name}: re-registered by itself: {reregistered}, expected {expected}; "
                  "if an SDK changed, update EXPECTED_REREGISTRATION and the README", flush=True)
            return False
    return code == 0


def kill_group(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def tail(path, lines=40):
    if path.exists():
        print(f"--- last lines of {path.name}", flush=True)
        for line in path.read_text(errors="replace").splitlines()[-lines:]:
            print(f"    {line}", flush=True)


if __name__ == "__main__":
    main()
