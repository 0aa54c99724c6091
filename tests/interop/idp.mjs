// The upstream identity provider of the interoperability suite: panva's oidc-provider (OpenID
// Certified), set up the way a Keycloak realm usually is — one confidential client for the bridge,
// users with email, name and groups, a login form, no consent screen for that first-party client,
// PKCE required, refresh tokens — and, by default, an issuer with a path (`/realms/test`).
//
// usage: node idp.mjs --port N --client-secret S --redirect-uri URL [--issuer-path /realms/test]
//        [--backchannel-logout-uri URL] [--access-token-ttl SECONDS] [--exit-with-stdin]
// --access-token-ttl shortens its access tokens' lifetime (an hour by default), so that the suite
// sees the bridge renew a kept one.
// With --backchannel-logout-uri, ending a session at the provider (its RP-initiated logout page)
// POSTs a logout token there (OpenID Connect Back-Channel Logout 1.0), naming the session's sid.
// Prints `ready <issuer>` on stdout once it listens on 127.0.0.1. With --exit-with-stdin it also
// exits when its standard input closes, so it cannot outlive the process that started it.
import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string' },
    'issuer-path': { type: 'string', default: '/realms/test' },
    'backchannel-logout-uri': { type: 'string' },
    'access-token-ttl': { type: 'string' },
    'exit-with-stdin': { type: 'boolean', default: false },
  },
});
if (args['exit-with-stdin']) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
const port = Number(args.port);
const mountPath = args['issuer-path'].replace(/\/$/, '');
const issuer = `http://127.0.0.1:${port}${mountPath}`;

// The realm's users, shared with the suite's clients, which assert the identity the MCP server sees.
// mallory signs in upstream but is outside the bridge's allowed groups.
const USERS = JSON.parse(readFileSync(new URL('./users.json', import.meta.url), 'utf8'));
const accountsBySub = Object.fromEntries(
  Object.entries(USERS).map(([username, user]) => [user.sub, { username, ...user }]),
);

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'interop-rs256', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'mcp-oauth-bridge',
      client_secret: args['client-secret'],
      redirect_uris: [args['redirect-uri']],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...(args['backchannel-logout-uri']
        ? { backchannel_logout_uri: args['backchannel-logout-uri'], backchannel_logout_session_required: true }
        : {}),
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: ['interop-suite-cookie-key-not-secret'] },
  pkce: { required: () => true },
  ...(args['access-token-ttl'] ? { ttl: { AccessToken: Number(args['access-token-ttl']) } } : {}),
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: {
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  features: { devInteractions: { enabled: false }, backchannelLogout: { enabled: true } },
  // Its requests to relying parties (the logout token) refuse special-use addresses, loopback
  // included, against SSRF; every server of the suite is on loopback, so that guard is left out.
  fetch: (url, options) => {
    const { dispatcher: _ssrfGuard, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  interactions: { url: (ctx, interaction) => `${mountPath}/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const account = accountsBySub[sub];
    if (!account) return undefined;
    const { password: _password, username: _username, ...claims } = account;
    return { accountId: sub, claims: async () => claims };
  },
  // Keycloak asks no consent of a first-party confidential client: grant what it requested.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
    await grant.save();
    return grant;
  },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<p id="error">${escape(out.error)}: ${escape(out.error_description ?? '')}</p>`);
  },
});

// The suite reads these in idp.log when a back-channel logout does not arrive.
provider.on('backchannel.success', (ctx, client, accountId, sid) => console.log(`backchannel logout sent to ${client.clientId} for ${accountId} (sid ${sid})`));
provider.on('backchannel.error', (ctx, error, client) => console.log(`backchannel logout to ${client.clientId} failed: ${error.message}`));
provider.on('end_session.success', () => console.log('end_session.success'));
provider.on('end_session.error', (ctx, error) => console.log(`end_session.error: ${error.message}`));

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>` +
    `<body><h1>${escape(title)}</h1>${body}</body></html>`;
}

function loginPage(uid, message) {
  const action = `${mountPath}/interaction/${uid}`;
  return page(
    'Sign in to test realm',
    (message ? `<p id="login-error">${escape(message)}</p>` : '') +
      `<form id="kc-form-login" method="post" action="${action}/login">` +
      '<input type="text" name="username" autocomplete="username">' +
      '<input type="password" name="password" autocomplete="current-password">' +
      '<button type="submit" name="login" value="login">Sign In</button></form>' +
      `<a id="cancel" href="${action}/abort">Cancel</a>`,
  );
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

// The login form and its two answers; everything else is oidc-provider's.
async function interaction(req, res, rest) {
  const [uid, action] = rest.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, page('Error', '<p>interaction mismatch</p>'));
  if (req.method === 'GET' && !action) {
    return send(res, 200, loginPage(uid));
  }
  if (req.method === 'GET' && action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    });
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const user = USERS[form.get('username') ?? ''];
    if (!user || user.password !== form.get('password')) {
      return send(res, 200, loginPage(uid, 'Invalid username or password.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
  }
  return send(res, 404, page('Not found', ''));
}

const handle = provider.callback();
const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    if (!url.pathname.startsWith(`${mountPath}/`) && url.pathname !== mountPath) {
      return send(res, 404, page('Not found', ''));
    }
    const interactionPrefix = `${mountPath}/interaction/`;
    if (url.pathname.startsWith(interactionPrefix)) {
      return await interaction(req, res, url.pathname.slice(interactionPrefix.length));
    }
    // Mounted below the issuer's path, as Keycloak serves a realm: oidc-provider reads the mount
    // path from `originalUrl`.
    req.originalUrl = req.url;
    req.url = req.url.slice(mountPath.length) || '/';
    return handle(req, res);
  } catch (error) {
    console.error('idp error:', error);
    if (!res.headersSent) send(res, 500, page('Error', `<p>${escape(error.message)}</p>`));
  }
});
server.listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.close(() => process.exit(0)));
