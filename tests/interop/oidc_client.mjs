// A strict OpenID Connect relying party against the bridge: panva's oauth4webapi with its
// defaults, the way a web application signs its users in with the bridge as its OpenID provider.
// Discovery → Dynamic Client Registration (no id_token_signed_response_alg, so OIDC's RS256
// default applies; client_secret_basic, the registration default) → authorize with PKCE, state
// and nonce → code exchange with the ID token validated → refresh → UserInfo.
//
// `private-key-jwt`: the same relying party registered with its own ES256 key instead of a
// secret, authenticating with oauth4webapi's signed client assertions (RFC 7523) at the token,
// introspection and revocation endpoints.
//
// `id-jag`: Enterprise-Managed Authorization. This script is also the company's identity
// provider: it mints an Identity Assertion JWT Authorization Grant for alice and the configured
// client `enterprise-agent`; oauth4webapi trades it for our access token (jwt-bearer grant), and
// the official MCP TypeScript SDK calls a tool through the bridge's proxy with it.
// `enterprise-jwks` prints the provider's public keys, for the bridge's configuration.
//
// `backchannel-logout`: OpenID Connect Back-Channel Logout 1.0. The relying party signs in for
// the MCP server behind the bridge's proxy; then the user signs out at the upstream provider
// (oidc-provider's RP-initiated logout page), which POSTs a logout token to the bridge: the next
// refresh is refused, and so is the access token at the proxy.
//
// The one setting changed from the defaults: plain http is allowed, because every server of the
// suite listens on loopback without TLS.
//
// usage: node oidc_client.mjs flow|private-key-jwt|id-jag|backchannel-logout --issuer URL
//        [--server-url URL] [--idp-issuer URL]
//        node oidc_client.mjs enterprise-jwks
import { createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as oauth from 'oauth4webapi';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Browser, USERS } from './headless_browser.mjs';

const LABEL = 'oauth4webapi';
const REDIRECT_URI = 'http://127.0.0.1:33420/callback';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: { issuer: { type: 'string' }, 'server-url': { type: 'string' }, 'idp-issuer': { type: 'string' } },
});
const issuer = args.issuer ? new URL(args.issuer) : undefined;
const insecure = { [oauth.allowInsecureRequests]: true };

function check(condition, what) {
  if (!condition) throw new Error(`${LABEL}: ${what}`);
  console.log(`PASS ${LABEL}: ${what}`);
}

function decodePart(jwt, index) {
  return JSON.parse(Buffer.from(jwt.split('.')[index], 'base64url').toString());
}

// oauth4webapi trusts an ID token from the token endpoint by TLS, as OIDC Core §3.1.3.7 allows;
// a relying party that checks signatures too (most libraries) needs the key in our JWKS.
async function verifySignature(as, jwt) {
  const header = decodePart(jwt, 0);
  const jwks = await (await fetch(as.jwks_uri)).json();
  const jwk = jwks.keys.find((key) => key.kid === header.kid);
  check(jwk && jwk.kty === 'RSA' && jwk.alg === 'RS256' && jwk.use === 'sig', 'the ID token key is a published RSA signing key');
  const key = await webcrypto.subtle.importKey('jwk', jwk, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, ['verify']);
  const [head, payload, signature] = jwt.split('.');
  return webcrypto.subtle.verify('RSASSA-PKCS1-v1_5', key, Buffer.from(signature, 'base64url'), Buffer.from(`${head}.${payload}`));
}

async function discover() {
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oidc', ...insecure }));
  check(as.issuer === issuer.href, 'OpenID Connect discovery: the issuer matches');
  return as;
}

async function register(as, metadata) {
  return oauth.processDynamicClientRegistrationResponse(
    await oauth.dynamicClientRegistrationRequest(
      as,
      {
        client_name: 'interop oauth4webapi',
        redirect_uris: [REDIRECT_URI],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        application_type: 'native',
        ...metadata,
      },
      insecure,
    ),
  );
}

// Authorize (PKCE, state, nonce) through consent and the upstream login, then redeem the code:
// the validated token response and the nonce it must carry.
async function signIn(as, client, clientAuth, { browser = new Browser('alice'), extra = {} } = {}) {
  const codeVerifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  const nonce = oauth.generateRandomNonce();
  const authorizationUrl = new URL(as.authorization_endpoint);
  for (const [name, value] of Object.entries({
    client_id: client.client_id,
    redirect_uri: REDIRECT_URI,
    response_type: 'code',
    scope: 'openid email profile',
    code_challenge: await oauth.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state,
    nonce,
    ...extra,
  })) {
    authorizationUrl.searchParams.set(name, value);
  }
  const outcome = await browser.authorize(authorizationUrl.href, REDIRECT_URI);
  check(JSON.stringify(outcome.pages) === JSON.stringify(['bridge-consent', 'idp-login']), "passed the bridge's consent and the upstream login form");
  const callback = new URL(REDIRECT_URI);
  for (const [name, value] of Object.entries(outcome.params)) callback.searchParams.set(name, value);
  // Checks state and, since the metadata says the server sends it, iss (RFC 9207).
  const params = oauth.validateAuthResponse(as, client, callback, state);
  check(as.authorization_response_iss_parameter_supported === true, 'the authorization response iss was checked (RFC 9207)');
  const tokens = await oauth.processAuthorizationCodeResponse(
    as,
    client,
    await oauth.authorizationCodeGrantRequest(as, client, clientAuth, params, REDIRECT_URI, codeVerifier, insecure),
    { expectedNonce: nonce, requireIdToken: true },
  );
  return { tokens, nonce };
}

async function scenarioFlow() {
  const as = await discover();
  check(as.id_token_signing_alg_values_supported?.[0] === 'RS256', 'RS256 is the first ID token algorithm advertised');
  const registered = await register(as, {});
  check(typeof registered.client_secret === 'string' && registered.token_endpoint_auth_method === 'client_secret_basic', 'registered as a confidential client (client_secret_basic)');
  check(registered.id_token_signed_response_alg === undefined, 'no ID token algorithm registered: OIDC says RS256');
  // What a strict relying party assumes of a client that registered no algorithm.
  const client = { client_id: registered.client_id, id_token_signed_response_alg: 'RS256' };
  const clientAuth = oauth.ClientSecretBasic(registered.client_secret);

  const { tokens, nonce } = await signIn(as, client, clientAuth);
  const claims = oauth.getValidatedIdTokenClaims(tokens);
  const alice = USERS.alice;
  check(decodePart(tokens.id_token, 0).alg === 'RS256', 'the ID token is RS256, as OIDC requires by default');
  check(claims.sub === alice.sub && claims.nonce === nonce && claims.aud === client.client_id, 'the ID token validated: issuer, audience, nonce, times');
  check(claims.email === alice.email && claims.name === alice.name, 'the ID token carries email and name for the email and profile scopes');
  check(await verifySignature(as, tokens.id_token), "the ID token's signature verifies with the published key");
  check(typeof tokens.refresh_token === 'string', 'a refresh token was issued');

  const refreshed = await oauth.processRefreshTokenResponse(
    as,
    client,
    await oauth.refreshTokenGrantRequest(as, client, clientAuth, tokens.refresh_token, insecure),
  );
  check(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'the refresh token rotated');

  const userinfo = await oauth.processUserInfoResponse(
    as,
    client,
    claims.sub,
    await oauth.userInfoRequest(as, client, refreshed.access_token, insecure),
  );
  check(userinfo.sub === alice.sub && userinfo.email === alice.email, 'UserInfo with the refreshed access token names the same user');
}

async function scenarioPrivateKeyJwt() {
  const as = await discover();
  check(as.token_endpoint_auth_methods_supported.includes('private_key_jwt') && as.token_endpoint_auth_signing_alg_values_supported.includes('ES256'), 'private_key_jwt with ES256 is advertised');
  const { privateKey, publicKey } = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const kid = 'interop-es256';
  const jwk = { ...(await webcrypto.subtle.exportKey('jwk', publicKey)), kid, alg: 'ES256', use: 'sig' };
  const registered = await register(as, { token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [jwk] } });
  check(registered.token_endpoint_auth_method === 'private_key_jwt' && registered.client_secret === undefined, 'registered with its public key and no secret');
  const client = { client_id: registered.client_id };
  const clientAuth = oauth.PrivateKeyJwt({ key: privateKey, kid });

  const { tokens } = await signIn(as, client, clientAuth);
  check(typeof tokens.access_token === 'string' && typeof tokens.refresh_token === 'string', 'the code was redeemed with a signed client assertion');
  const refreshed = await oauth.processRefreshTokenResponse(
    as,
    client,
    await oauth.refreshTokenGrantRequest(as, client, clientAuth, tokens.refresh_token, insecure),
  );
  check(refreshed.refresh_token !== tokens.refresh_token, 'refreshed with another assertion');

  const introspected = await oauth.processIntrospectionResponse(
    as,
    client,
    await oauth.introspectionRequest(as, client, clientAuth, refreshed.access_token, insecure),
  );
  check(introspected.active === true && introspected.client_id === client.client_id, 'introspected its own token with an assertion');
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, clientAuth, refreshed.refresh_token, insecure));
  const afterRevocation = await oauth.refreshTokenGrantRequest(as, client, clientAuth, refreshed.refresh_token, insecure);
  const refusal = await afterRevocation.json();
  check(afterRevocation.status === 400 && refusal.error === 'invalid_grant', 'revoked with an assertion: the refresh token no longer works (invalid_grant)');

  // The same assertion twice: oauth4webapi makes a fresh one per request, so a replay is forged.
  let captured;
  await clientAuth(as, client, { set: (name, value) => { if (name === 'client_assertion') captured = value; } }, new Headers());
  const replay = () => fetch(as.introspection_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: refreshed.access_token, client_id: client.client_id, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: captured }),
  });
  check((await replay()).status === 200, 'an assertion works once');
  const second = await replay();
  check(second.status === 401 && (await second.json()).error === 'invalid_client', 'and is refused when replayed');
}

// ---- the enterprise identity provider of the id-jag scenario ----

export const ENTERPRISE_ISSUER = 'https://idp.corp.example';
export const ENTERPRISE_CLIENT = 'enterprise-agent';
export const ENTERPRISE_SECRET = 'enterprise-agent-secret-0123456789';
const ENTERPRISE_KID = 'corp-idp-1';
const enterprisePem = readFileSync(new URL('../fixtures/other_rsa.pem', import.meta.url), 'utf8');

function enterpriseJwks() {
  const jwk = createPublicKey(enterprisePem).export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: ENTERPRISE_KID, alg: 'RS256', use: 'sig' }] };
}

async function mintIdJag(claims) {
  const key = await webcrypto.subtle.importKey(
    'jwk',
    createPrivateKey(enterprisePem).export({ format: 'jwk' }),
    { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    false,
    ['sign'],
  );
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${b64({ alg: 'RS256', typ: 'oauth-id-jag+jwt', kid: ENTERPRISE_KID })}.${b64(claims)}`;
  const signature = await webcrypto.subtle.sign('RSASSA-PKCS1-v1_5', key, Buffer.from(input));
  return `${input}.${Buffer.from(signature).toString('base64url')}`;
}

async function scenarioIdJag() {
  const as = await discover();
  check(as.grant_types_supported.includes('urn:ietf:params:oauth:grant-type:jwt-bearer'), 'the jwt-bearer grant is advertised');
  const alice = USERS.alice;
  const now = Math.floor(Date.now() / 1000);
  const resource = args['server-url'];
  const assertion = await mintIdJag({
    iss: ENTERPRISE_ISSUER,
    sub: alice.sub,
    aud: as.issuer,
    client_id: ENTERPRISE_CLIENT,
    jti: oauth.generateRandomState(),
    iat: now,
    exp: now + 120,
    resource,
    scope: 'mcp:tools email',
    email: alice.email,
    email_verified: true,
    name: alice.name,
    groups: alice.groups,
  });
  const client = { client_id: ENTERPRISE_CLIENT };
  const clientAuth = oauth.ClientSecretBasic(ENTERPRISE_SECRET);
  const grant = () =>
    oauth.genericTokenEndpointRequest(as, client, clientAuth, 'urn:ietf:params:oauth:grant-type:jwt-bearer', { assertion }, insecure);
  const tokens = await oauth.processGenericTokenEndpointResponse(as, client, await grant());
  const granted = tokens.scope.split(' ').sort().join(' ');
  check(typeof tokens.access_token === 'string' && granted === 'email mcp:tools', 'the ID-JAG was traded for an access token with its scope (jwt-bearer grant)');
  const replay = await grant();
  check(replay.status === 400 && (await replay.json()).error === 'invalid_grant', 'the same ID-JAG again is refused');

  // The MCP server behind the bridge's proxy sees alice, as the enterprise IdP vouched.
  const mcp = new Client({ name: 'interop-id-jag', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(resource), {
    requestInit: { headers: { authorization: `Bearer ${tokens.access_token}` } },
  });
  await mcp.connect(transport);
  const result = await mcp.callTool({ name: 'whoami', arguments: {} });
  const identity = result.structuredContent?.result ?? result.structuredContent ?? JSON.parse(result.content[0].text);
  check(identity.sub === alice.sub && identity.email === alice.email && identity.client_id === ENTERPRISE_CLIENT, 'the MCP server sees the user the enterprise IdP vouched for');
  await mcp.close();
}

// A JSON-RPC call through the bridge's proxy with `accessToken`: the HTTP status.
async function proxiedStatus(accessToken) {
  const response = await fetch(args['server-url'], {
    method: 'POST',
    headers: {
      authorization: `Bearer ${accessToken}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
    },
    body: JSON.stringify({
      jsonrpc: '2.0', id: 1, method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'interop-logout', version: '1.0.0' } },
    }),
  });
  await response.body?.cancel();
  return response.status;
}

async function scenarioBackchannelLogout() {
  const as = await discover();
  const registered = await register(as, {});
  const client = { client_id: registered.client_id, id_token_signed_response_alg: 'RS256' };
  const clientAuth = oauth.ClientSecretBasic(registered.client_secret);
  const browser = new Browser('alice');
  const { tokens } = await signIn(as, client, clientAuth, {
    browser,
    extra: { scope: 'openid email mcp:tools', resource: args['server-url'] },
  });
  check(typeof tokens.refresh_token === 'string', 'signed in for the MCP server, with a refresh token');
  check(await proxiedStatus(tokens.access_token) === 200, 'the proxy lets the access token through');

  // The user signs out at the provider, in the browser that signed in there.
  const endSession = `${args['idp-issuer']}/session/end`;
  const page = await (await browser.fetch(endSession)).text();
  const xsrf = page.match(/name="xsrf" value="([^"]+)"/)?.[1];
  const action = page.match(/<form id="op.logoutForm" method="post" action="([^"]+)"/)?.[1];
  check(xsrf && action, "the provider's sign-out page asks to confirm");
  const confirmed = await browser.fetch(new URL(action, endSession).href, { xsrf, logout: 'yes' });
  check([200, 302, 303].includes(confirmed.status), 'signed out at the provider');

  // The provider has called the bridge's back-channel logout endpoint before answering.
  let refusedRefresh;
  try {
    await oauth.processRefreshTokenResponse(
      as,
      client,
      await oauth.refreshTokenGrantRequest(as, client, clientAuth, tokens.refresh_token, insecure),
    );
  } catch (error) {
    refusedRefresh = error.error ?? error.cause?.error ?? error.message;
  }
  check(refusedRefresh === 'invalid_grant', `the next refresh is refused (${refusedRefresh})`);
  check(await proxiedStatus(tokens.access_token) === 401, 'the proxy refuses the access token');
}

const started = Date.now();
try {
  const scenario = positionals[0];
  if (scenario === 'enterprise-jwks') {
    console.log(JSON.stringify(enterpriseJwks()));
    process.exit(0);
  }
  await {
    flow: scenarioFlow,
    'private-key-jwt': scenarioPrivateKeyJwt,
    'id-jag': scenarioIdJag,
    'backchannel-logout': scenarioBackchannelLogout,
  }[scenario]();
  console.log(`DONE ${LABEL} ${scenario} in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  process.exit(0);
} catch (error) {
  console.error(error);
  console.log(`ERROR ${error.message}`);
  process.exit(1);
}
