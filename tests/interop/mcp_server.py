"""An MCP server built with the official Python SDK (FastMCP, 1.x line) that trusts the bridge's
access tokens by itself — the "server validates itself" setup: signature through the bridge's JWKS,
`typ: at+jwt`, issuer, audience (this server's resource URL), expiry. It serves its own RFC 9728
protected-resource metadata, pointing clients at the bridge.

usage: mcp_server.py --port N --issuer URL --jwks-uri URL --scope SCOPE
"""

import argparse
import time

import jwt
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.fastmcp import Context, FastMCP

IDENTITY_CLAIMS = ("sub", "email", "name", "groups", "client_id", "aud", "scope", "jti", "exp")


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--jwks-uri", required=True)
    parser.add_argument("--scope", required=True)
    args = parser.parse_args()

    resource = f"http://127.0.0.1:{args.port}/mcp"
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

    print(f"ready {resource}", flush=True)
    server.run(transport="streamable-http")


if __name__ == "__main__":
    main()
