"""Glewlwyd (Debian's `glewlwyd` 2.7, OpenID Certified) as a second upstream provider: a SQLite
database from the package's own schema, a configuration file for one loopback port, then, through
its admin API, an OpenID Connect plugin instance (RS256, PKCE, claims for name, email and groups),
the scopes, the users of users.json with their groups, and a confidential client for the bridge.

Glewlwyd's login page is a JavaScript application; the headless browsers sign in through the API it
calls instead (`POST /api/auth/`, then the client's scopes granted with `PUT /api/auth/grant/…`),
which is what the page does.
"""

import json
import subprocess
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

# The package's schema: dbconfig-common's copy, or the documentation's (minimal images drop docs).
SCHEMAS = [Path("/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3"),
           Path("/usr/share/doc/glewlwyd/database/init.sqlite3.sql.gz")]
MODULES = Path("/usr/lib/glewlwyd")
ADMIN = {"username": "admin", "password": "password"}  # the schema's initial administrator
PLUGIN = "oidc"
SCOPES = ["openid", "email", "profile", "groups"]


def issuer(port):
    return f"http://127.0.0.1:{port}/api/{PLUGIN}"


def schema():
    for path in SCHEMAS:
        if path.exists():
            data = path.read_bytes()
            return subprocess.run(["zcat"], input=data, check=True, capture_output=True).stdout \
                if path.suffix == ".gz" else data
    raise RuntimeError(f"glewlwyd: no database schema at {' or '.join(map(str, SCHEMAS))}; is the package installed?")


def prepare(work, port):
    """A fresh database and a configuration file of our own for `port`, on loopback only."""
    work.mkdir(parents=True, exist_ok=True)
    database = work / "glewlwyd.sqlite3"
    database.unlink(missing_ok=True)
    subprocess.run(["sqlite3", str(database)], input=schema(), check=True)
    path = work / "glewlwyd.conf"
    path.write_text(f"""
port={port}
bind_address="127.0.0.1"
external_url="http://127.0.0.1:{port}"
login_url="login.html"
api_prefix="api"
log_mode="console"
log_level="INFO"
cookie_secure=0
session_expiration=3600
session_key="GLEWLWYD2_SESSION_ID"
admin_session_authentication="cookie"
profile_session_authentication="cookie"
login_api_enabled=true
admin_scope="g_admin"
profile_scope="g_profile"
user_module_path="{MODULES}/user"
client_module_path="{MODULES}/client"
user_auth_scheme_module_path="{MODULES}/scheme"
plugin_module_path="{MODULES}/plugin"
hash_algorithm="SHA512"
database =
{{
  type = "sqlite3"
  path = "{database}"
}};
""")
    return path


class Admin:
    def __init__(self, base):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}/api{path}", data=data, method=method,
                                         headers={"content-type": "application/json"})
        try:
            with self.opener.open(request, timeout=30) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"glewlwyd {method} {path}: {error.code} {error.read().decode()[:500]}") from None
        return json.loads(text) if text.strip() else None


def rsa_key(work):
    key = work / "oidc-key.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout"], check=True, capture_output=True,
                            text=True).stdout
    return key.read_text(), public


def configure(port, work, users, client_id, client_secret, redirect_uri):
    """Everything the bridge needs at a running Glewlwyd, through its admin API."""
    admin = Admin(f"http://127.0.0.1:{port}")
    admin.call("POST", "/auth/", ADMIN)

    # Users keep their groups in a property of their own; the database backend stores what its
    # data format lists.
    module = admin.call("GET", "/mod/user/database")
    module["parameters"]["data-format"]["groups"] = {
        "multiple": True, "read": True, "write": True, "profile-read": True, "profile-write": False}
    admin.call("PUT", "/mod/user/database", module)
    admin.call("PUT", "/mod/user/database/reset")  # the running instance reads its parameters again

    for scope in SCOPES[1:]:
        admin.call("POST", "/scope/", {"name": scope, "display_name": scope, "description": f"the {scope} claims",
                                      "password_required": True, "password_max_age": 0, "scheme": {}})

    private, public = rsa_key(work)
    admin.call("POST", "/mod/plugin/", {
        "module": "oidc", "name": PLUGIN, "display_name": "OpenID Connect",
        "parameters": {
            "iss": issuer(port),
            "jwt-type": "rsa", "jwt-key-size": "256", "key": private, "cert": public,
            "access-token-duration": 3600, "refresh-token-duration": 1209600, "code-duration": 600,
            "refresh-token-rolling": True, "allow-non-oidc": False,
            "auth-type-code-enabled": True, "auth-type-token-enabled": False,
            "auth-type-id-token-enabled": False, "auth-type-none-enabled": False,
            "auth-type-password-enabled": False, "auth-type-client-enabled": False,
            "auth-type-device-enabled": False, "auth-type-refresh-enabled": True,
            "pkce-allowed": True, "pkce-method-plain-allowed": False,
            "secret-type": "public",
            "name-claim": "no", "name-claim-scope": ["profile"],
            "email-claim": "no", "email-claim-scope": ["email"],
            "scope-claim": "no",
            "claims": [{"name": "groups", "user-property": "groups", "scope": ["groups"]}],
            "allowed-scope": SCOPES,
            "jwks-show": True,
            "session-management-allowed": False,
            "register-client-allowed": False,
            "introspection-revocation-allowed": False,
            "request-parameter-allow": False,
        },
    })

    for username, user in users.items():
        admin.call("POST", "/user/", {
            "username": username, "name": user["name"], "email": user["email"], "enabled": True,
            "password": user["password"], "scope": SCOPES, "groups": user["groups"]})

    admin.call("POST", "/client/", {
        "client_id": client_id, "name": "mcp-oauth-bridge", "description": "", "enabled": True,
        "confidential": True, "password": client_secret, "redirect_uri": [redirect_uri],
        "authorization_type": ["code", "refresh_token"], "scope": SCOPES,
        "token_endpoint_auth_method": ["client_secret_basic"]})
