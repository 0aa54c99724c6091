// The official MCP TypeScript SDK driving the whole MCP authorization flow against the bridge,
// headlessly; the same scenarios as py_client.py (see there).
//
// usage: node ts_client.mjs flow|denied --server-url URL --issuer URL
//        node ts_client.mjs step-up --server-url URL --issuer URL --scope ADMIN_SCOPE --tool GUARDED_TOOL
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Browser, USERS } from './headless_browser.mjs';

const sdkVersion = JSON.parse(
  readFileSync(new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url), 'utf8'),
).version;
const LABEL = `typescript-sdk-${sdkVersion}`;
const REDIRECT_URI = 'http://127.0.0.1:33419/callback';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'server-url': { type: 'string' },
    issuer: { type: 'string' },
    scope: { type: 'string' },
    tool: { type: 'string' },
    // The bridge's upstream: panva's oidc-provider (idp.mjs) or Glewlwyd (glewlwyd.py).
    provider: { type: 'string', default: 'oidc-provider' },
  },
});
const scenario = positionals[0];
const serverUrl = args['server-url'];
const issuer = args.issuer;

function check(condition, what) {
  if (!condition) throw new Error(`${LABEL}: ${what}`);
  console.log(`PASS ${LABEL}: ${what}`);
}

// ---- the MCP host application: the SDK's OAuthClientProvider, kept in memory ----

class HostApp {
  // `refresh: false` registers without the refresh_token grant; `oneBrowser` keeps one browser,
  // with its cookies, for every sign-in (as a person's browser would).
  constructor(username, browserOptions = {}, { refresh = true, oneBrowser = false } = {}) {
    this.username = username;
    this.browserOptions = browserOptions;
    this.refresh = refresh;
    this.oneBrowser = oneBrowser;
    this.stored = {};
    this.exchanges = [];
    this.outcomes = [];
    this.lastAuthorization = undefined;
    this.fetch = this.fetch.bind(this);
  }

  // Everything the SDK sends goes through here (transport and OAuth requests alike).
  async fetch(input, init = {}) {
    const request = new Request(input, init);
    let form = {};
    if (request.method === 'POST' && (request.headers.get('content-type') ?? '').includes('x-www-form-urlencoded')) {
      form = Object.fromEntries(new URLSearchParams(await request.clone().text()));
    }
    const response = await fetch(input, init);
    const url = new URL(request.url);
    this.exchanges.push({
      method: request.method,
      path: url.pathname,
      status: response.status,
      form,
      wwwAuthenticate: response.headers.get('www-authenticate') ?? '',
      body: response.status >= 400 ? await response.clone().text() : '',
    });
    return response;
  }

  find(method, pathEnd, form = {}, from = 0) {
    return this.exchanges
      .slice(from)
      .filter((e) => e.method === method && e.path.endsWith(pathEnd) && Object.entries(form).every(([k, v]) => e.form[k] === v));
  }

  get provider() {
    const app = this;
    return {
      get redirectUrl() {
        return REDIRECT_URI;
      },
      get clientMetadata() {
        return {
          client_name: `interop ${LABEL}`,
          redirect_uris: [REDIRECT_URI],
          grant_types: app.refresh ? ['authorization_code', 'refresh_token'] : ['authorization_code'],
          response_types: ['code'],
          token_endpoint_auth_method: 'none',
        };
      },
      state: () => randomBytes(32).toString('base64url'),
      clientInformation: () => app.stored.client,
      saveClientInformation: (info) => {
        app.stored.client = info;
      },
      tokens: () => app.stored.tokens,
      saveTokens: (tokens) => {
        app.stored.tokens = tokens;
      },
      saveCodeVerifier: (verifier) => {
        app.stored.verifier = verifier;
      },
      codeVerifier: () => app.stored.verifier,
      invalidateCredentials: (scope) => {
        app.invalidated = [...(app.invalidated ?? []), scope];
        if (scope === 'all' || scope === 'client') delete app.stored.client;
        if (scope === 'all' || scope === 'tokens') delete app.stored.tokens;
        if (scope === 'all' || scope === 'verifier') delete app.stored.verifier;
      },
      redirectToAuthorization: async (authorizationUrl) => {
        app.lastAuthorization = Object.fromEntries(authorizationUrl.searchParams);
        const browser = app.oneBrowser && app.browser ? app.browser : new Browser(app.username, app.browserOptions);
        app.browser = browser;
        app.pending = await browser.authorize(authorizationUrl.href, REDIRECT_URI);
        app.outcomes.push(app.pending);
      },
    };
  }

  // Connects, completing a sign-in when the SDK asks for one, as an MCP host does.
  async connect() {
    const client = new Client({ name: 'interop-ts', version: '1.0.0' });
    let transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: this.provider, fetch: this.fetch });
    this.transport = transport;
    try {
      await client.connect(transport);
      return client;
    } catch (error) {
      if (!(error instanceof UnauthorizedError) || !this.pending) throw error;
    }
    const outcome = this.pending;
    this.pending = undefined;
    if (outcome.params.error) {
      const refusal = new Error(`authorization refused: ${JSON.stringify(outcome.params)}`);
      refusal.params = outcome.params;
      throw refusal;
    }
    // RFC 9207: this SDK line leaves the authorization-response issuer to the application.
    check(outcome.params.iss === issuer, 'the authorization response carries iss (RFC 9207)');
    check(outcome.params.state && outcome.params.state === this.lastAuthorization.state, 'the authorization response carries our state');
    await transport.finishAuth(outcome.params.code);
    transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: this.provider, fetch: this.fetch });
    this.transport = transport;
    const reconnected = new Client({ name: 'interop-ts', version: '1.0.0' });
    await reconnected.connect(transport);
    return reconnected;
  }
}

// Calls whoami on the app's session. A 401 mid-session (expired token) makes the SDK run auth()
// again; when that needs a new sign-in the SDK throws UnauthorizedError, and the app completes the
// sign-in and reconnects, as an MCP host does.
async function whoami(app) {
  try {
    return readIdentity(await app.client.callTool({ name: 'whoami', arguments: {} }));
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
    await app.client.close();
    app.client = await app.connect();
    return readIdentity(await app.client.callTool({ name: 'whoami', arguments: {} }));
  }
}

function readIdentity(result) {
  if (result.isError) throw new Error(`whoami failed: ${JSON.stringify(result.content)}`);
  const structured = result.structuredContent;
  return structured?.result ?? structured ?? JSON.parse(result.content[0].text);
}

// Glewlwyd makes its own subjects: the same one every time is what can be checked.
const glewlwydSubjects = {};

function checkIdentity(identity, username, clientId) {
  const user = USERS[username];
  if (args.provider === 'glewlwyd') {
    glewlwydSubjects[username] ??= identity.sub;
    check(typeof identity.sub === 'string' && identity.sub.length > 0 && identity.sub === glewlwydSubjects[username], `the MCP server sees Glewlwyd's subject of ${username}, the same each time`);
  } else {
    check(identity.sub === user.sub, `the MCP server sees the upstream subject of ${username}`);
  }
  check(identity.email === user.email && identity.name === user.name, 'email and name came through from the upstream provider');
  check(JSON.stringify([...(identity.groups ?? [])].sort()) === JSON.stringify([...user.groups].sort()), 'groups came through from the upstream provider');
  check(identity.client_id === clientId, 'the token names the registered client');
  check(identity.aud === serverUrl, 'the token audience is the MCP server (RFC 8707 resource)');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// One second past the held access token's `exp` (read, not verified), plus one for whole-second clocks.
function sleepUntilExpired(app) {
  const payload = JSON.parse(Buffer.from(app.stored.tokens.access_token.split('.')[1], 'base64url').toString());
  return sleep((Math.max(payload.exp - Date.now() / 1000, 0) + 2) * 1000);
}

async function waitForRestart() {
  console.log('RESTART');
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    lines.close();
    if (line.trim() === 'RESTARTED') return;
  }
  throw new Error('the orchestrator did not restart the bridge');
}

async function scenarioFlow() {
  const app = new HostApp('alice');
  app.client = await app.connect();
  const firstMcp = app.exchanges.find((e) => e.path === new URL(serverUrl).pathname);
  check(firstMcp.status === 401 && firstMcp.wwwAuthenticate.includes('resource_metadata='), 'the MCP server answered 401 with resource_metadata');
  check(app.find('GET', '/.well-known/oauth-protected-resource/mcp').some((e) => e.status === 200), 'protected-resource metadata discovered');
  check(app.exchanges.some((e) => e.status === 200 && e.path.includes('/.well-known/') && !e.path.includes('protected-resource')), 'authorization-server metadata discovered');
  const registrations = app.find('POST', '/oauth/register');
  check(registrations.length === 1 && registrations[0].status === 201, 'registered by DCR');
  check(app.lastAuthorization.code_challenge_method === 'S256' && app.lastAuthorization.resource === serverUrl, 'authorized with PKCE S256 and resource');
  check(JSON.stringify(app.outcomes.at(-1).pages) === JSON.stringify(['bridge-consent', 'idp-login']), "passed the bridge's consent and the upstream login form");
  const codeGrants = app.find('POST', '/oauth/token', { grant_type: 'authorization_code' });
  check(codeGrants.length === 1 && codeGrants[0].status === 200, 'exchanged the code');

  const tools = await app.client.listTools();
  check(['whoami', 'echo'].every((name) => tools.tools.some((t) => t.name === name)), 'tools/list through the MCP server');
  let identity = await whoami(app);
  const clientId = app.stored.client.client_id;
  checkIdentity(identity, 'alice', clientId);

  const firstRefreshToken = app.stored.tokens.refresh_token;
  const firstJti = identity.jti;
  await sleepUntilExpired(app);
  let mark = app.exchanges.length;
  identity = await whoami(app);
  const refreshes = app.find('POST', '/oauth/token', { grant_type: 'refresh_token' }, mark);
  check(refreshes.length === 1 && refreshes[0].status === 200, 'the expired access token was refreshed');
  check(app.stored.tokens.refresh_token && app.stored.tokens.refresh_token !== firstRefreshToken, 'the refresh token rotated');
  check(identity.jti !== firstJti && identity.exp > Date.now() / 1000, 'the MCP server saw the refreshed access token');
  checkIdentity(identity, 'alice', clientId);

  // The bridge restarts with in-memory storage: every registration and refresh token is gone.
  // Counted from before the restart: through the bridge's proxy, the restart also cuts the SDK's
  // GET event stream, and the SDK may reconnect, meet the expired token and re-authorize in the
  // background before the next tool call.
  mark = app.exchanges.length;
  await waitForRestart();
  await sleepUntilExpired(app);
  identity = await whoami(app);
  const refused = app.find('POST', '/oauth/token', { grant_type: 'refresh_token' }, mark);
  check(refused.length === 1 && refused[0].status === 401 && refused[0].body.includes('"invalid_client"'), 'refreshing with the forgotten registration was refused: 401 invalid_client');
  check((app.invalidated ?? []).includes('all'), 'the SDK dropped the dead registration itself');
  const newClientId = app.stored.client.client_id;
  check(newClientId !== clientId && app.find('POST', '/oauth/register', {}, mark).length === 1, 'the SDK registered again');
  checkIdentity(identity, 'alice', newClientId);
  await app.client.close();
  console.log(`RESULT ${LABEL} reregistered_by_sdk=yes`);
}

async function expectRefusal(username, upstream, what) {
  const app = new HostApp(username, { upstream });
  try {
    const client = await app.connect();
    await client.close();
  } catch (error) {
    if (!error.params) throw error;
    check(error.params.error === 'access_denied', `${what}: the client receives access_denied`);
    check(error.params.iss === issuer && error.params.state && error.params.state === app.lastAuthorization.state, `${what}: with state and iss`);
    check(!('code' in error.params) && app.find('POST', '/oauth/token').length === 0, `${what}: no code, no token request`);
    return;
  }
  throw new Error(`${LABEL}: ${what}: the session was established`);
}

async function scenarioDenied() {
  await expectRefusal('mallory', 'login', 'a user outside the allowed groups');
  // Glewlwyd's login application has no cancel of its own to follow.
  if (args.provider !== 'glewlwyd') await expectRefusal('alice', 'cancel', 'a user who cancels the upstream login');
}

// Per-tool scopes at the bridge's proxy: the guarded tool is refused with 403 insufficient_scope,
// the SDK re-authorizes with the scopes the challenge names, the consent page asks only for what
// is new, and the call succeeds. The app takes no refresh tokens: on a 403 this SDK line refreshes
// first, which cannot widen a grant, and then gives up (typescript-sdk#2255).
async function scenarioStepUp() {
  const app = new HostApp('alice', {}, { refresh: false, oneBrowser: true });
  app.client = await app.connect();
  const firstScope = app.lastAuthorization.scope;
  check(!app.stored.tokens.refresh_token && !app.stored.tokens.scope.split(' ').includes(args.scope), `signed in without ${args.scope}`);
  const echoed = await app.client.callTool({ name: 'echo', arguments: { text: 'allowed' } });
  check(!echoed.isError && echoed.content[0].text === 'allowed', 'an unguarded tool runs with the first token');

  const mark = app.exchanges.length;
  try {
    await app.client.callTool({ name: args.tool, arguments: {} });
    throw new Error(`${LABEL}: the guarded tool ran without its scope`);
  } catch (error) {
    if (!(error instanceof UnauthorizedError) || !app.pending) throw error;
  }
  const refused = app.exchanges.slice(mark).find((e) => e.status === 403);
  check(refused && refused.wwwAuthenticate.includes('error="insufficient_scope"') && refused.wwwAuthenticate.includes(`scope="${firstScope} ${args.scope}"`), '403 insufficient_scope naming every scope the call needs');
  check(app.lastAuthorization.scope.split(' ').includes(args.scope), 'the SDK re-authorized with the wider scope');
  const consent = app.browser.lastConsent;
  check(JSON.stringify(consent.asks) === JSON.stringify([args.scope]) && consent.approvedBefore.includes(firstScope), `the consent page asked only for what is new (${JSON.stringify(consent)})`);
  const outcome = app.pending;
  app.pending = undefined;
  check(outcome.params.iss === issuer && outcome.params.code && outcome.params.state === app.lastAuthorization.state, 'the step-up authorization answered with code, state and iss');
  await app.transport.finishAuth(outcome.params.code);
  const granted = app.stored.tokens.scope.split(' ');
  check(granted.includes(args.scope) && granted.includes(firstScope), `the new token carries the union (${app.stored.tokens.scope})`);

  const result = await app.client.callTool({ name: args.tool, arguments: {} });
  check(!result.isError && result.content[0].text === 'purged', 'the guarded tool runs after the step-up');
  const still = await app.client.callTool({ name: 'echo', arguments: { text: 'still' } });
  check(!still.isError && still.content[0].text === 'still', 'the unguarded tool still runs');
  await app.client.close();
}

const started = Date.now();
try {
  await { flow: scenarioFlow, denied: scenarioDenied, 'step-up': scenarioStepUp }[scenario]();
  console.log(`DONE ${LABEL} ${scenario} in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  process.exit(0);
} catch (error) {
  console.error(error);
  console.log(`ERROR ${error.message}`);
  process.exit(1);
}
