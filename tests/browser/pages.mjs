// Every page a person sees (consent, login, login after a wrong password, provider chooser,
// error), in each language and colour scheme asked for, checked in headless Debian Chromium:
// axe-core's WCAG 2.1 A and AA rules at 720 and at 320 px, the page's language, no script on it,
// nothing wider than a 320 px screen, a visible focus ring on the first control reached with Tab,
// the logo loaded. Then the login form once more with JavaScript off: a wrong password is posted
// and answered all the same. Saves a screenshot of each page in each scheme (first language) to
// the folder given. Prints one JSON line for the Rust test to check.
//
// usage: node pages.mjs <plan.json>
//   plan: {"pages": [{"name", "url", "wrong_password"?}], "languages": ["en", "de"],
//          "schemes": ["light", "dark"], "screenshots": "<dir>", "client_redirect": "<prefix>"}
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { launch } from './launch.mjs';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const axePath = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
const WCAG_21_AA = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];

async function axeViolations(page) {
  const axe = await page.evaluate(
    (tags) => window.axe.run(document, { runOnly: { type: 'tag', values: tags } }),
    WCAG_21_AA,
  );
  return {
    violations: axe.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5),
    })),
    passed: axe.passes.length,
  };
}

// A new name each time: the login throttle (three failures per name) must not answer instead.
let attempt = 0;
async function postWrongPassword(page) {
  attempt += 1;
  await page.fill('#username', `nobody-${attempt}`);
  await page.fill('#password', 'not-the-password');
  await Promise.all([page.waitForLoadState('load'), page.click('button.allow')]);
  await page.waitForSelector('#login-error');
}

const browser = await launch();
const results = [];
let withoutScript = null;
try {
  for (const [index, language] of plan.languages.entries()) {
    for (const scheme of plan.schemes) {
      for (const { name, url, wrong_password: wrongPassword } of plan.pages) {
        // axe is injected as a script, which the pages' CSP rightly forbids: the test bypasses it.
        const context = await browser.newContext({
          locale: language,
          colorScheme: scheme,
          bypassCSP: true,
          viewport: { width: 720, height: 640 },
        });
        const page = await context.newPage();
        // Nothing listens at the client's redirect URI; no page here should go there anyway.
        await page.route((u) => u.href.startsWith(plan.client_redirect), (route) => route.abort());
        let response = await page.goto(url);
        if (wrongPassword) {
          [response] = await Promise.all([
            page.waitForResponse((r) => r.request().method() === 'POST'),
            postWrongPassword(page),
          ]);
        }
        const result = {
          page: name,
          language,
          scheme,
          status: response.status(),
          url: page.url(),
          lang: await page.getAttribute('html', 'lang'),
          heading: (await page.textContent('h1'))?.trim(),
          scripts: await page.evaluate(() => document.scripts.length),
          logoShown: await page.evaluate(() => {
            const logo = document.querySelector('.brand img');
            return logo !== null && logo.complete && logo.naturalWidth > 0;
          }),
          announced: await page.evaluate(() => {
            const error = document.getElementById('login-error');
            return error !== null && error.getAttribute('role') === 'alert'
              && document.getElementById('password').getAttribute('aria-describedby') === 'login-error';
          }),
        };
        if (index === 0) {
          await page.screenshot({ path: `${plan.screenshots}/${name}-${scheme}.png`, fullPage: true });
        }
        await page.keyboard.press('Tab');
        result.focused = await page.evaluate(() => document.activeElement?.tagName ?? null);
        result.focusRing = await page.evaluate(() => {
          const style = getComputedStyle(document.activeElement);
          return style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2;
        });
        await page.addScriptTag({ path: axePath });
        const wide = await axeViolations(page);
        result.violations = wide.violations;
        result.rulesPassed = wide.passed;
        await page.setViewportSize({ width: 320, height: 800 });
        result.overflowsAt320 = await page.evaluate(
          () => document.documentElement.scrollWidth > document.documentElement.clientWidth,
        );
        result.violationsAt320 = (await axeViolations(page)).violations;
        results.push(result);
        await context.close();
      }
    }
  }
  const login = plan.pages.find((p) => p.name === 'login');
  if (login) {
    const context = await browser.newContext({ javaScriptEnabled: false, locale: 'en' });
    const page = await context.newPage();
    await page.goto(login.url);
    await postWrongPassword(page);
    withoutScript = { error: (await page.textContent('#login-error')).trim() };
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify({ results, withoutScript }));
