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
// The one setting changed from the defaults: plain http is allowed, because every server of the
// suite listens on loopback without TLS.
//
// usage: node oidc_client.mjs flow|private-key-jwt --issuer URL
import { webcrypto } from 'node:crypto';
import { parseArgs } from 'node:util';
import * as oauth from 'oauth4webapi';
import { Browser, USERS } from './headless_browser.mjs';

const LABEL = 'oauth4webapi';
const REDIRECT_URI = 'http://127.0.0.1:33420/callback';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: { issuer: { type: 'string' }, 'server-url': { type: 'string' } },
});
const issuer = new URL(args.issuer);
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
async function signIn(as, client, clientAuth) {
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
  })) {
    authorizationUrl.searchParams.set(name, value);
  }
  const outcome = await new Browser('alice').authorize(authorizationUrl.href, REDIRECT_URI);
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

const started = Date.now();
try {
  const scenario = positionals[0];
  await { flow: scenarioFlow, 'private-key-jwt': scenarioPrivateKeyJwt }[scenario]();
  console.log(`DONE ${LABEL} ${scenario} in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  process.exit(0);
} catch (error) {
  console.error(error);
  console.log(`ERROR ${error.message}`);
  process.exit(1);
}
