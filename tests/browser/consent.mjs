// Drives the bridge's consent page in headless Debian Chromium: opens the authorization URL,
// takes a screenshot of the consent page, clicks Allow, and follows the upstream login back to the
// client's redirect URI. Prints one JSON line for the Rust test to check.
//
// usage: node consent.mjs <authorize-url> <screenshot.png> <client-redirect-prefix>
import { chromium } from 'playwright-core';

const [authorizeUrl, screenshotPath, clientRedirect] = process.argv.slice(2);
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
  // Nothing listens on the client's loopback redirect URI: answer it here and record it.
  let clientReached = null;
  await page.route(
    (url) => url.href.startsWith(clientRedirect),
    (route) => {
      clientReached = route.request().url();
      return route.fulfill({ status: 200, contentType: 'text/plain', body: 'client reached' });
    },
  );
  const response = await page.goto(authorizeUrl);
  const consentStatus = response.status();
  const consentUrl = page.url();
  const heading = (await page.textContent('h1')).trim();
  const framing = response.headers()['x-frame-options'];
  await page.screenshot({ path: screenshotPath, fullPage: true });
  await page.getByRole('button', { name: 'Allow' }).click();
  await page.waitForURL((url) => url.href.startsWith(clientRedirect), { timeout: 20000 });
  console.log(JSON.stringify({ consentStatus, consentUrl, heading, framing, clientReached }));
} finally {
  await browser.close();
}
