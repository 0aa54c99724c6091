"""An MCP server built with the official Python SDK (FastMCP, 1.x line) that trusts the bridge's
access tokens by itself — the "server validates itself" setup: signature through the bridge's JWKS,
`typ: at+jwt`, issuer, audience (this server's resource URL), expiry. It serves its own RFC 9728
protected-resource metadata, pointing clients at the bridge.

With --behind-proxy it is the other setup: the server has no authentication of its own, sits
behind the bridge's proxy, and learns the caller from the identity JWT the proxy adds
(`X-Forwarded-Identity`), which it verifies through the same JWKS.

With --exchange-as CLIENT:SECRET (behind the proxy, which then forwards the caller's token) it
also acts for its caller downstream: its tool `act_as_user` trades that token at the bridge
(RFC 8693 token exchange, as the configured client CLIENT) for the identity provider's token,
with which it calls the provider's UserInfo, and for one of the bridge's tokens to a second
resource (--api-url, an MCP server that validates the bridge's tokens itself), whose `whoami` it
calls; it returns both identities.

usage: mcp_server.py --port N --issuer URL --jwks-uri URL --scope SCOPE [--behind-proxy
       [--exchange-as CLIENT:SECRET --provider-issuer URL --api-url URL]]
"""

import argparse
import hashlib
import json
import time

import jwt
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.fastmcp import Context, FastMCP

IDENTITY_CLAIMS = ("sub", "email", "name", "groups", "client_id", "aud", "scope", "jti", "exp", "act")
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class BridgeTokenVerifier:
    """Validates the bridge's RFC 9068 JWT access tokens against its published keys."""

    def __init__(self, issuer: str, jwks_uri: str, resource: str):
        self.issuer = issuer
        self.resource = resource
        # Caches keys and re-fetches on an unknown `kid`, which is how a key rotation arrives.
        self.keys = jwt.PyJWKClient(jwks_uri, cache_keys=True, lifespan=300)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
                return None
            key = self.keys.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=["ES256", "RS256"],
                audience=self.resource,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "client_id"]},
            )
        except (jwt.PyJWTError, ValueError) as error:
            print(f"mcp_server: token refused: {type(error).__name__}: {error}", flush=True)
            return None
        return AccessToken(
            token=token,
            client_id=claims["client_id"],
            scopes=claims.get("scope", "").split(),
            expires_at=claims["exp"],
            # What the token says it is for; decode() has already required it to be us.
            resource=claims["aud"] if isinstance(claims["aud"], str) else self.resource,
            subject=claims["sub"],
            claims=claims,
        )


class ProxyIdentity:
    """Reads the identity the bridge's proxy asserts, after checking its signature, type,
    issuer, audience (this server) and expiry."""

    def __init__(self, issuer: str, jwks_uri: str, audience: str, token_forwarded: bool):
        self.issuer = issuer
        self.audience = audience
        self.token_forwarded = token_forwarded
        self.keys = jwt.PyJWKClient(jwks_uri, cache_keys=True, lifespan=300)

    def claims(self, request) -> dict:
        token = request.headers.get("x-forwarded-identity") if request is not None else None
        if not token:
            raise ValueError("the proxy sent no identity")
        if jwt.get_unverified_header(token).get("typ") != "identity+jwt":
            raise ValueError("not an identity token")
        key = self.keys.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key=key.key, algorithms=["ES256", "RS256"], audience=self.audience,
                            issuer=self.issuer, options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        forwarded = request.headers.get("authorization")
        if forwarded and not self.token_forwarded:
            raise ValueError("the proxy passed the client's token on")
        if self.token_forwarded and not forwarded:
            raise ValueError("the proxy did not pass the client's token on (proxy.forward_access_token)")
        if request.headers.get("x-forwarded-user") != claims["sub"]:
            raise ValueError("X-Forwarded-User disagrees with the identity token")
        # In the access token's terms, so that the clients check the same things either way.
        return {**claims, "aud": claims["resource"], "jti": claims["access_token_jti"],
                "exp": claims["access_token_exp"]}


def add_act_as_user(server, proxy_identity, args) -> None:
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    client_id, secret = args.exchange_as.split(":", 1)
    token_endpoint = f"{args.issuer}oauth/token"

    async def exchange(http, subject_token, audience):
        response = await http.post(token_endpoint, auth=(client_id, secret), data={
            "grant_type": TOKEN_EXCHANGE, "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE, "audience": audience})
        if response.status_code != 200:
            raise ValueError(f"the exchange for {audience} was refused: {response.status_code} {response.text}")
        answer = response.json()
        if answer.get("issued_token_type") != ACCESS_TOKEN_TYPE or answer.get("token_type") != "Bearer":
            # The answer's keys only: its values include the token.
            raise ValueError(f"the exchange for {audience} issued something else: {sorted(answer)}")
        return answer

    async def call_whoami(token):
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            async with streamable_http_client(args.api_url, http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    result = await session.call_tool("whoami", {})
        if result.isError:
            raise ValueError(f"the second resource refused: {result.content}")
        structured = result.structuredContent
        return structured.get("result", structured) if structured else json.loads(result.content[0].text)

    @server.tool()
    async def act_as_user(ctx: Context) -> dict:
        """Calls the identity provider's UserInfo and a second resource as the caller, with tokens
        the bridge exchanged for the caller's (never the caller's own)."""
        request = ctx.request_context.request
        caller = proxy_identity.claims(request)
        subject_token = request.headers["authorization"].removeprefix("Bearer ")
        async with httpx.AsyncClient(timeout=10) as http:
            discovery = (await http.get(f"{args.provider_issuer}/.well-known/openid-configuration")).json()
            provider_token = await exchange(http, subject_token, "upstream")
            userinfo = await http.get(discovery["userinfo_endpoint"],
                                      headers={"Authorization": f"Bearer {provider_token['access_token']}"})
            if userinfo.status_code != 200:
                raise ValueError(f"the provider's UserInfo refused its own token: {userinfo.status_code} {userinfo.text}")
            ours = await exchange(http, subject_token, args.api_url)
        return {
            "caller": caller["sub"],
            "provider": userinfo.json(),
            # A digest, so that the client can tell a renewed token from the kept one.
            "provider_token_sha256": hashlib.sha256(provider_token["access_token"].encode()).hexdigest(),
            "provider_token_expires_in": provider_token["expires_in"],
            "api": await call_whoami(ours["access_token"]),
            "api_token_expires_in": ours["expires_in"],
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--jwks-uri", required=True)
    parser.add_argument("--scope", required=True)
    parser.add_argument("--behind-proxy", action="store_true")
    parser.add_argument("--exchange-as", help="CLIENT:SECRET, this server's credentials at the bridge")
    parser.add_argument("--provider-issuer", help="the identity provider, whose UserInfo act_as_user calls")
    parser.add_argument("--api-url", help="the second resource act_as_user calls")
    args = parser.parse_args()

    resource = f"http://127.0.0.1:{args.port}/mcp"
    proxy_identity = None
    if args.behind_proxy:
        proxy_identity = ProxyIdentity(args.issuer, args.jwks_uri, f"http://127.0.0.1:{args.port}/",
                                       token_forwarded=bool(args.exchange_as))
        server = FastMCP("interop-echo", host="127.0.0.1", port=args.port, log_level="WARNING")
    else:
        server = FastMCP(
            "interop-echo",
            host="127.0.0.1",
            port=args.port,
            token_verifier=BridgeTokenVerifier(args.issuer, args.jwks_uri, resource),
            auth=AuthSettings(
                issuer_url=args.issuer,
                resource_server_url=resource,
                required_scopes=[args.scope],
                validate_token_resource=True,
            ),
            log_level="WARNING",
        )

    @server.tool()
    def whoami(ctx: Context) -> dict:
        """Echoes the identity the access token of this very request carries."""
        # Not `get_access_token()`: in SDK 1.x a tool runs in the session's task, whose context
        # was copied at the session's first request, so that returns the token that opened the
        # session, even after the client refreshed. The HTTP request's user is the current one.
        request = ctx.request_context.request
        if proxy_identity is not None:
            claims = proxy_identity.claims(request)
        else:
            user = getattr(request, "user", None) if request is not None else None
            token = getattr(user, "access_token", None)
            claims = (token.claims or {}) if token else {}
        identity = {name: claims.get(name) for name in IDENTITY_CLAIMS}
        identity["expires_in"] = claims.get("exp", 0) - int(time.time())
        return identity

    @server.tool()
    def echo(text: str) -> str:
        """Echoes its argument."""
        return text

    @server.tool()
    def purge_cache() -> str:
        """A guarded tool: behind the bridge's proxy it needs the admin scope (proxy.tool_scopes)."""
        return "purged"

    if args.exchange_as:
        add_act_as_user(server, proxy_identity, args)

    print(f"ready {resource}", flush=True)
    server.run(transport="streamable-http")


if __name__ == "__main__":
    main()
