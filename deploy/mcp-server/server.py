"""A sample MCP server for docker-compose.yml. It has no authentication of its own: it is reachable
only through the bridge's proxy, which checks every token and tells it who is calling in the
X-Forwarded-User, X-Forwarded-Email and X-Forwarded-Groups headers (and a signed
X-Forwarded-Identity JWT, for servers that want to verify the assertion themselves)."""

from mcp.server.fastmcp import Context, FastMCP

server = FastMCP("sample", host="0.0.0.0", port=3000, log_level="INFO")


@server.tool()
def whoami(ctx: Context) -> dict:
    """Who the bridge says is calling."""
    headers = ctx.request_context.request.headers
    groups = headers.get("x-forwarded-groups", "")
    return {
        "user": headers.get("x-forwarded-user"),
        "email": headers.get("x-forwarded-email"),
        "groups": [g for g in groups.split(",") if g],
    }


@server.tool()
def echo(text: str) -> str:
    """Echoes its argument."""
    return text


if __name__ == "__main__":
    server.run(transport="streamable-http")
