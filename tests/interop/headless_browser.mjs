// A small headless browser for the interop clients: cookies by host, redirects by hand, and the
// forms a sign-in meets (the bridge's consent page, the provider's login form, or Glewlwyd's login
// application, which it drives through the API that application calls).
import { readFileSync } from 'node:fs';

// What a person reads on a page (no head, style or script), for the message of an error.
function visibleText(body) {
  return body
    .replace(/<(head|style|script)[\s\S]*?<\/\1>/gi, ' ')
    .replace(/<[^>]+>/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

export const USERS = JSON.parse(readFileSync(new URL('./users.json', import.meta.url), 'utf8'));
const MAX_STEPS = 20;

export class Browser {
  constructor(username, { upstream = 'login', consent = 'allow' } = {}) {
    this.username = username;
    this.upstream = upstream;
    this.consent = consent;
    this.cookies = new Map(); // host -> Map(name -> value)
  }

  async fetch(url, form, { method, json } = {}) {
    const target = new URL(url);
    const jar = this.cookies.get(target.hostname) ?? new Map();
    const headers = {};
    if (jar.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    if (form) headers['content-type'] = 'application/x-www-form-urlencoded';
    if (json) headers['content-type'] = 'application/json';
    const response = await fetch(url, {
      method: method ?? (form || json ? 'POST' : 'GET'),
      body: json ? JSON.stringify(json) : form ? new URLSearchParams(form).toString() : undefined,
      headers,
      redirect: 'manual',
    });
    for (const cookie of response.headers.getSetCookie()) {
      const [pair, ...attributes] = cookie.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attributes.some((a) => /^\s*max-age=0\s*$/i.test(a)) || value === '';
      if (expired) jar.delete(name);
      else jar.set(name, value);
    }
    this.cookies.set(target.hostname, jar);
    return response;
  }

  async authorize(authorizationUrl, redirectUri) {
    let url = authorizationUrl;
    let form;
    const pages = [];
    for (let step = 0; step < MAX_STEPS; step += 1) {
      const response = await this.fetch(url, form);
      if ([301, 302, 303, 307, 308].includes(response.status)) {
        const location = new URL(response.headers.get('location'), url);
        if (`${location.origin}${location.pathname}` === redirectUri) {
          return { params: Object.fromEntries(location.searchParams), pages };
        }
        if (location.pathname.endsWith('/login.html') && location.searchParams.has('callback_url')) {
          url = await this.glewlwydLogin(location, pages);
          form = undefined;
          continue;
        }
        url = location.href;
        form = undefined;
        continue;
      }
      const body = await response.text();
      if (response.status !== 200) throw new Error(`${response.status} at ${url.split('?')[0]}: ${visibleText(body).slice(0, 500)}`);
      [url, form] = this.answer(url, body, pages);
    }
    throw new Error(`more than ${MAX_STEPS} steps without reaching ${redirectUri}`);
  }

  // What Glewlwyd's login application does: sign in with the password, grant the client the
  // scopes it asked for, then continue the authorization (`g_continue`).
  async glewlwydLogin(location, pages) {
    if (this.upstream !== 'login') throw new Error(`glewlwyd's login has no "${this.upstream}" to follow`);
    pages.push('idp-login');
    const user = USERS[this.username];
    const login = await this.fetch(new URL('/api/auth/', location).href, undefined, {
      json: { username: this.username, password: user.password },
    });
    if (login.status !== 200) throw new Error(`glewlwyd refused the username or password: ${login.status}`);
    const client = location.searchParams.get('client_id');
    const grant = await this.fetch(new URL(`/api/auth/grant/${encodeURIComponent(client)}`, location).href, undefined, {
      method: 'PUT',
      json: { scope: location.searchParams.get('scope') },
    });
    if (grant.status !== 200) throw new Error(`glewlwyd did not record the grant: ${grant.status}`);
    const next = new URL(location.searchParams.get('callback_url'));
    next.searchParams.set('g_continue', '');
    return next.href;
  }

  answer(url, body, pages) {
    const attr = (tag, name) => tag.match(new RegExp(`${name}="([^"]*)"`))?.[1];
    const unescape = (s) => s.replace(/&#(\d+);/g, (_, n) => String.fromCharCode(Number(n))).replace(/&amp;/g, '&');
    if (body.includes('name="decision"')) {
      pages.push('bridge-consent');
      // What the page asks for, and what it says was allowed before (incremental consent).
      const listed = (cls) => [...(body.match(new RegExp(`<ul class="${cls}">(.*?)</ul>`))?.[1] ?? '').matchAll(/<code>([^<]*)<\/code>/g)].map((m) => m[1]);
      this.lastConsent = { asks: listed('asks'), approvedBefore: listed('approved') };
      const formTag = body.match(/<form[^>]*>/)[0];
      const fields = {};
      for (const input of body.match(/<input[^>]*>/g) ?? []) {
        if (attr(input, 'type') === 'hidden') fields[attr(input, 'name')] = unescape(attr(input, 'value') ?? '');
      }
      fields.decision = this.consent;
      return [new URL(unescape(attr(formTag, 'action')), url).href, fields];
    }
    if (body.includes('id="kc-form-login"')) {
      if (body.includes('id="login-error"')) throw new Error('the identity provider refused the username or password');
      pages.push('idp-login');
      if (this.upstream === 'cancel') {
        const cancel = body.match(/<a id="cancel" href="([^"]*)"/)[1];
        return [new URL(unescape(cancel), url).href, undefined];
      }
      const formTag = body.match(/<form id="kc-form-login"[^>]*>/)[0];
      const user = USERS[this.username];
      return [new URL(unescape(attr(formTag, 'action')), url).href, { username: this.username, password: user.password, login: 'login' }];
    }
    throw new Error(`unexpected page at ${url.split('?')[0]}: ${visibleText(body).slice(0, 500)}`);
  }
}
