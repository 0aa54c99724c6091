// Drives the local login form in headless Debian Chromium: opens the authorization URL, allows
// the consent page, types a wrong password, then the right one, and follows the bridge back to the
// client's redirect URI. Takes a screenshot of the form showing its error. Prints one JSON line.
//
// usage: node login.mjs <authorize-url> <screenshot.png> <client-redirect-prefix> <username> <password>
import { launch, pageCatchingClient } from './launch.mjs';

const [authorizeUrl, screenshotPath, clientRedirect, username, password] = process.argv.slice(2);
const browser = await launch();
try {
  const { page, reached } = await pageCatchingClient(browser, clientRedirect);
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
  console.log(JSON.stringify({ loginUrl, framing, heading, error, clientReached: reached() }));
} finally {
  await browser.close();
}
