// Drives the local login form in headless Debian Chromium: opens the authorization URL, allows
// the consent page, types a wrong password, then the right one, and follows the bridge back to the
// client's redirect URI. Takes a screenshot of the form showing its error. Prints one JSON line.
//
// usage: node login.mjs <authorize-url> <screenshot.png> <client-redirect-prefix> <username> <password>
import { chromium } from 'playwright-core';

const [authorizeUrl, screenshotPath, clientRedirect, username, password] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
try {
  const page = await browser.newPage();
  let clientReached = null;
  await page.route(
    (url) => url.href.startsWith(clientRedirect),
    (route) => {
      clientReached = route.request().url();
      return route.fulfill({ status: 200, contentType: 'text/plain', body: 'client reached' });
    },
  );
  await page.goto(authorizeUrl);
  const [login] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname.endsWith('/oauth/login')),
    page.getByRole('button', { name: 'Allow' }).click(),
  ]);
  await page.waitForSelector('form#login');
  const loginUrl = page.url();
  const framing = login.headers()['x-frame-options'];
  const heading = (await page.textContent('h1')).trim();

  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(`${password}-wrong`);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('#login-error');
  const error = (await page.textContent('#login-error')).trim();
  await page.screenshot({ path: screenshotPath, fullPage: true });

  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL((url) => url.href.startsWith(clientRedirect), { timeout: 20000 });
  console.log(JSON.stringify({ loginUrl, framing, heading, error, clientReached }));
} finally {
  await browser.close();
}
