"""The official MCP Python SDK (1.x or 2.x, whichever this interpreter has) driving the whole MCP
authorization flow against the bridge, headlessly.

Scenarios (one per run, see orchestrate.py):
  flow     401 -> protected-resource metadata -> our metadata -> DCR -> authorize (PKCE, resource)
           -> consent -> upstream login -> code -> tokens -> tools/list -> whoami; then the access
           token expires and the SDK refreshes; then (after the orchestrator restarted the bridge,
           which forgets every registration) the refresh is refused with 401 invalid_client and the
           client registers again.
  denied   a user the bridge's policy refuses, and a user who cancels the upstream login: both
           reach the client as `access_denied` with `state` and `iss`.
  exchange the MCP server behind the proxy acts for the user downstream (RFC 8693): its tool
           `act_as_user` shows the user as the identity provider's UserInfo and a second resource
           (--api-url) see them, with tokens the bridge exchanged for the user's.

Prints one `PASS ...` line per check and exits non-zero on the first failure.
"""

import argparse
import asyncio
import base64
import importlib.metadata
import json
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from browser import Browser, BrowserError

from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

SDK_VERSION = importlib.metadata.version("mcp")
SDK_MAJOR = int(SDK_VERSION.split(".")[0])
if SDK_MAJOR >= 2:
    from mcp.client.auth import AuthorizationCodeResult

USERS = json.loads((Path(__file__).parent / "users.json").read_text())
REDIRECT_URI = "http://127.0.0.1:33418/callback"
LABEL = f"python-sdk-{SDK_VERSION}"


def check(condition, what, evidence=None):
    if not condition:
        if evidence is not None:
            for exchange in evidence:
                print(f"  evidence: {exchange['method']} {exchange['path']} -> {exchange['status']} {exchange['form'].get('grant_type', '')} {exchange['body'][:200]}", flush=True)
        raise AssertionError(f"{LABEL}: {what}")
    print(f"PASS {LABEL}: {what}", flush=True)


class AuthorizationRefused(Exception):
    """The authorization server sent the user back with an error instead of a code."""

    def __init__(self, params):
        super().__init__(f"authorization refused: {params}")
        self.params = params


class MemoryStorage:
    """The SDK's TokenStorage, kept in memory like a desktop client keeps it for one server."""

    def __init__(self):
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


class Recorder:
    """Every HTTP exchange the SDK makes, for assertions about what it did."""

    def __init__(self):
        self.exchanges = []

    async def on_response(self, response):
        request = response.request
        form = {}
        if request.method == "POST" and "x-www-form-urlencoded" in request.headers.get("content-type", ""):
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        # Only error bodies: a successful one may be an event stream that never ends.
        body = (await response.aread()).decode(errors="replace") if response.status_code >= 400 else ""
        self.exchanges.append(
            {
                "method": request.method,
                "url": str(request.url),
                "path": urlsplit(str(request.url)).path,
                "status": response.status_code,
                "form": form,
                "www_authenticate": response.headers.get("www-authenticate", ""),
                "body": body,
            }
        )

    def find(self, method, path_end, **form):
        return [
            e
            for e in self.exchanges
            if e["method"] == method
            and e["path"].endswith(path_end)
            and all(e["form"].get(k) == v for k, v in form.items())
        ]

    def mark(self):
        return len(self.exchanges)

    def since(self, mark):
        recorder = Recorder()
        recorder.exchanges = self.exchanges[mark:]
        return recorder


class Client:
    """One MCP client application: the SDK's OAuth provider, its storage, and a browser."""

    def __init__(self, server_url, issuer, username, upstream="login"):
        self.server_url = server_url
        self.issuer = issuer
        self.storage = MemoryStorage()
        self.recorder = Recorder()
        self.username = username
        self.upstream = upstream
        self.outcomes = []
        self._pending = None
        self._provider = None

    def provider(self):
        # One provider for the application's lifetime, as a long-running MCP host keeps it: it
        # remembers when the access token expires and refreshes ahead of time.
        if self._provider is None:
            self._provider = self._new_provider()
        return self._provider

    def _new_provider(self):
        metadata = OAuthClientMetadata(
            client_name=f"interop {LABEL}",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        )
        return OAuthClientProvider(
            server_url=self.server_url,
            client_metadata=metadata,
            storage=self.storage,
            redirect_handler=self._redirect,
            callback_handler=self._callback,
        )

    async def _redirect(self, authorization_url):
        query = parse_qs(urlsplit(authorization_url).query)
        self.last_authorization = {k: v[0] for k, v in query.items()}
        browser = Browser(self.username, USERS[self.username]["password"], upstream=self.upstream)
        # The browser is synchronous; keep the event loop (and the SDK's timers) running.
        self._pending = await asyncio.to_thread(browser.authorize, authorization_url, REDIRECT_URI)
        self.outcomes.append(self._pending)

    async def _callback(self):
        outcome, self._pending = self._pending, None
        if outcome.get("error"):
            raise AuthorizationRefused(outcome.params)
        if SDK_MAJOR >= 2:
            return AuthorizationCodeResult(code=outcome.get("code"), state=outcome.get("state"), iss=outcome.get("iss"))
        check(outcome.get("iss") == self.issuer, "the authorization response carries iss (RFC 9207), checked by the app for SDK 1.x")
        return outcome.get("code"), outcome.get("state")

    @asynccontextmanager
    async def session(self):
        """An initialized MCP session over streamable HTTP, signing in first when needed. One task
        enters and leaves every layer, as anyio's cancel scopes require."""
        async with create_mcp_http_client(auth=self.provider()) as http:
            http.event_hooks["response"].append(self.recorder.on_response)
            async with streamable_http_client(self.server_url, http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    yield session


async def call_tool(session, name):
    """A tool's structured result, in either SDK line."""
    result = await session.call_tool(name, {})
    # 2.x names the result's fields in snake_case, 1.x as on the wire.
    is_error = getattr(result, "is_error", None) if SDK_MAJOR >= 2 else result.isError
    structured = getattr(result, "structured_content", None) if SDK_MAJOR >= 2 else result.structuredContent
    if is_error:
        raise AssertionError(f"{name} failed: {result.content}")
    if structured:
        return structured.get("result", structured)
    return json.loads(result.content[0].text)


async def whoami(session):
    return await call_tool(session, "whoami")


def check_identity(identity, username, client_id, resource):
    user = USERS[username]
    check(identity["sub"] == user["sub"], f"the MCP server sees the upstream subject of {username}")
    check(identity["email"] == user["email"] and identity["name"] == user["name"], "email and name came through from the upstream provider")
    check(sorted(identity["groups"] or []) == sorted(user["groups"]), "groups came through from the upstream provider")
    check(identity["client_id"] == client_id, "the token names the registered client")
    check(identity["aud"] == resource, "the token's audience is the MCP server (RFC 8707 resource)")


def jwt_payload(token):
    """A JWT's claims, read, not verified (the MCP server verifies)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def token_expiry(client):
    return jwt_payload(client.storage.tokens.access_token)["exp"]


async def sleep_until_expired(client):
    """Until both the server (by `exp`) and the SDK (by when the response arrived plus
    `expires_in`) consider the access token expired, plus a second for whole-second clocks."""
    sdk_expiry = client.provider().context.token_expiry_time or 0
    deadline = max(token_expiry(client), sdk_expiry) + 1.5
    await asyncio.sleep(max(deadline - time.time(), 0))


async def scenario_flow(args):
    client = Client(args.server_url, args.issuer, "alice")
    resource = args.server_url

    async with client.session() as session:
        rec = client.recorder
        first_mcp = next(e for e in rec.exchanges if e["path"] == urlsplit(resource).path)
        check(first_mcp["status"] == 401 and "resource_metadata=" in first_mcp["www_authenticate"], "the MCP server answered 401 with resource_metadata")
        check(any(e["status"] == 200 for e in rec.find("GET", "/.well-known/oauth-protected-resource/mcp")), "protected-resource metadata discovered")
        check(any(e["status"] == 200 and "/.well-known/" in e["path"] and "protected-resource" not in e["path"] for e in rec.exchanges), "authorization-server metadata discovered")
        registrations = rec.find("POST", "/oauth/register")
        check(len(registrations) == 1 and registrations[0]["status"] == 201, "registered by DCR")
        auth = client.last_authorization
        check(auth.get("code_challenge_method") == "S256" and auth.get("resource") == resource, "authorized with PKCE S256 and resource")
        check(client.outcomes[-1].pages == ["bridge-consent", "idp-login"], "passed the bridge's consent and the upstream login form")
        code_grants = rec.find("POST", "/oauth/token", grant_type="authorization_code")
        check(len(code_grants) == 1 and code_grants[0]["status"] == 200, "exchanged the code")

        tools = await session.list_tools()
        check({"whoami", "echo"} <= {t.name for t in tools.tools}, "tools/list through the MCP server")
        identity = await whoami(session)
        client_id = client.storage.client_info.client_id
        check_identity(identity, "alice", client_id, resource)

        first_refresh_token = client.storage.tokens.refresh_token
        first_jti = identity["jti"]
        await sleep_until_expired(client)
        mark = rec.mark()
        identity = await whoami(session)
        refreshes = rec.since(mark).find("POST", "/oauth/token", grant_type="refresh_token")
        check(len(refreshes) == 1 and refreshes[0]["status"] == 200, "the expired access token was refreshed")
        check(client.storage.tokens.refresh_token not in (None, "", first_refresh_token), "the refresh token rotated")
        check(identity["jti"] != first_jti and identity["exp"] > time.time(), "the MCP server saw the refreshed access token")
        check_identity(identity, "alice", client_id, resource)

    # The bridge restarts with in-memory storage: every registration and refresh token is gone.
    print("RESTART", flush=True)
    if sys.stdin.readline().strip() != "RESTARTED":
        raise AssertionError("the orchestrator did not restart the bridge")
    await sleep_until_expired(client)

    mark = client.recorder.mark()
    sdk_error = None
    try:
        async with client.session() as session:
            identity = await whoami(session)
    except Exception as error:  # noqa: BLE001 - what the SDK raises differs between lines
        sdk_error = error
        print(f"NOTE {LABEL}: the SDK did not re-register by itself: {type(error).__name__}: {error}"[:400], flush=True)
    after = client.recorder.since(mark)
    refused = after.find("POST", "/oauth/token", grant_type="refresh_token")
    check(
        refused and refused[0]["status"] == 401 and '"invalid_client"' in refused[0]["body"],
        "refreshing with the forgotten registration was refused: 401 invalid_client",
        after.exchanges,
    )
    old_client_id = client_id
    if sdk_error is not None:
        # The SDK kept the dead client_id and sent the user to our authorization endpoint with it,
        # where the bridge must stop with a page (never a redirect to an unverified URI).
        browser_error = find_error(sdk_error, BrowserError)
        check(browser_error is not None and str(browser_error).startswith("400 ") and "unknown client_id" in str(browser_error),
              "the stale client_id got the bridge's error page, not a redirect")
        # What an MCP host does on a failed sign-in: forget the stored registration and retry.
        client.storage.client_info = None
        client.storage.tokens = None
        client._provider = None
        async with client.session() as session:
            identity = await whoami(session)
    new_client_id = client.storage.client_info.client_id
    check(new_client_id != old_client_id and client.recorder.since(mark).find("POST", "/oauth/register"), "the client registered again")
    check_identity(identity, "alice", new_client_id, resource)
    print(f"RESULT {LABEL} reregistered_by_sdk={'no' if sdk_error else 'yes'}", flush=True)


async def expect_refusal(args, username, upstream, what):
    client = Client(args.server_url, args.issuer, username, upstream=upstream)
    try:
        async with client.session() as session:
            await whoami(session)
    except BaseException as error:  # noqa: BLE001 - the refusal surfaces wrapped in task groups
        refusal = find_error(error, AuthorizationRefused)
        if refusal is None:
            raise
        params = refusal.params
        check(params.get("error") == "access_denied", f"{what}: the client receives access_denied")
        check(params.get("iss") == args.issuer and params.get("state") and params.get("state") == client.last_authorization.get("state"), f"{what}: with state and iss")
        check("code" not in params and not client.recorder.find("POST", "/oauth/token"), f"{what}: no code, no token request")
        return
    raise AssertionError(f"{LABEL}: {what}: the session was established")


def find_error(error, kind):
    """The first `kind` in an exception's groups, causes and contexts."""
    if isinstance(error, kind):
        return error
    for inner in getattr(error, "exceptions", None) or []:
        found = find_error(inner, kind)
        if found:
            return found
    cause = error.__cause__ or error.__context__
    return find_error(cause, kind) if cause else None


async def scenario_resource_server(args):
    """The MCP server accepts the bridge's tokens for itself only: tokens signed with the bridge's
    own key but wrong in one claim are refused, and so is a real token the bridge issued for its
    default audience (a client that sent no `resource`)."""
    import httpx
    import jwt

    key = (Path(__file__).parent.parent / "fixtures" / "signing_es256.pem").read_text()
    kid = json.loads(urllib_get(args.issuer + "oauth/jwks"))["keys"][0]["kid"]
    now = int(time.time())
    good = {
        "iss": args.issuer, "sub": "forged", "aud": args.server_url, "client_id": "forger",
        "scope": "mcp:tools", "iat": now, "nbf": now, "exp": now + 300, "jti": "j1",
    }

    def forge(claims, typ="at+jwt"):
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid, "typ": typ})

    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}}}

    async def status_with(token):
        async with httpx.AsyncClient() as http:
            response = await http.post(args.server_url, json=initialize, headers={
                "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"})
            return response.status_code, response.headers.get("www-authenticate", "")

    status, _ = await status_with(forge(good))
    check(status == 200, "control: a token signed with the bridge's key and right claims is accepted")
    cases = {
        "a token for another audience": {**good, "aud": args.issuer},
        "a token from another issuer": {**good, "iss": "https://elsewhere.example.com/"},
        "an expired token": {**good, "exp": now - 60, "iat": now - 400, "nbf": now - 400},
    }
    for what, claims in cases.items():
        status, challenge = await status_with(forge(claims))
        check(status == 401 and 'error="invalid_token"' in challenge, f"{what} is refused with invalid_token")
    status, _ = await status_with(forge(good, typ="JWT"))
    check(status == 401, "a JWT that is not an access token (typ) is refused")
    status, _ = await status_with(forge(good)[:-4] + "AAAA")
    check(status == 401, "a token with a broken signature is refused")

    # A real token from the bridge, for a client that named no resource: audience = the issuer.
    token = await bridge_token_without_resource(args)
    payload = jwt_payload(token)
    check(payload["aud"] == args.issuer, "without resource the bridge issues its default audience")
    status, _ = await status_with(token)
    check(status == 401, "the MCP server refuses a bridge token meant for another audience")


def urllib_get(url):
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


async def bridge_token_without_resource(args):
    import hashlib
    import secrets
    from urllib.parse import urlencode

    import httpx

    async with httpx.AsyncClient() as http:
        registered = await http.post(args.issuer + "oauth/register", json={
            "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none", "client_name": "probe"})
        client_id = registered.json()["client_id"]
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        url = args.issuer + "oauth/authorize?" + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": "s", "scope": "mcp:tools"})
        outcome = await asyncio.to_thread(Browser("alice", USERS["alice"]["password"]).authorize, url, REDIRECT_URI)
        tokens = await http.post(args.issuer + "oauth/token", data={
            "grant_type": "authorization_code", "code": outcome.get("code"), "redirect_uri": REDIRECT_URI,
            "client_id": client_id, "code_verifier": verifier})
        return tokens.json()["access_token"]


async def scenario_denied(args):
    await expect_refusal(args, "mallory", "login", "a user outside the allowed groups")
    await expect_refusal(args, "alice", "cancel", "a user who cancels the upstream login")


async def act_as_user(client, session):
    """The tool, called with an access token that still has seconds to live: the server exchanges
    it after the proxy checked it, and a token that expires in between would be refused."""
    if token_expiry(client) - time.time() < 3:
        await sleep_until_expired(client)
    return await call_tool(session, "act_as_user")


async def scenario_exchange(args):
    client = Client(args.server_url, args.issuer, "alice")
    user = USERS["alice"]
    async with client.session() as session:
        acted = await act_as_user(client, session)
        check(acted["caller"] == user["sub"], "the MCP server behind the proxy was called by alice")
        provider = acted["provider"]
        check(provider.get("sub") == user["sub"] and provider.get("email") == user["email"],
              "the provider's UserInfo, called with the provider's token the bridge handed on, names alice")
        api = acted["api"]
        check(api["sub"] == user["sub"] and api["aud"] == args.api_url,
              "the second resource, called with the bridge's exchanged token, sees alice, and itself as audience")
        check(api["client_id"] == "reports-mcp" and api["act"] == {"sub": "reports-mcp"},
              "the exchanged token names the MCP server as the actor (act)")
        check("mcp:tools" in (api["scope"] or "").split() and 0 < acted["api_token_expires_in"] <= 300,
              "within the rule's scopes, for max_ttl at most")

        # The provider's token kept at sign-in is renewed at the provider once under 30 s are left.
        kept = acted["provider_token_sha256"]
        await asyncio.sleep(max(acted["provider_token_expires_in"] - 30, 0) + 1.5)
        again = await act_as_user(client, session)
        check(again["provider_token_sha256"] != kept and again["provider_token_expires_in"] > 30
              and again["provider"].get("sub") == user["sub"],
              "the expiring provider token was renewed at the provider, and UserInfo accepts the new one")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["flow", "denied", "resource-server", "exchange"])
    parser.add_argument("--server-url", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--api-url", help="exchange: the second resource")
    args = parser.parse_args()
    started = time.monotonic()
    scenarios = {"flow": scenario_flow, "denied": scenario_denied, "resource-server": scenario_resource_server,
                 "exchange": scenario_exchange}
    asyncio.run(scenarios[args.scenario](args))
    print(f"DONE {LABEL} {args.scenario} in {time.monotonic() - started:.1f}s", flush=True)


if __name__ == "__main__":
    main()
