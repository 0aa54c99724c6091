// Drives the bridge's consent page in headless Debian Chromium: opens the authorization URL,
// takes a screenshot of the consent page, clicks Allow, and follows the upstream login back to the
// client's redirect URI. Prints one JSON line for the Rust test to check.
//
// usage: node consent.mjs <authorize-url> <screenshot.png> <client-redirect-prefix>
import { launch, pageCatchingClient } from './launch.mjs';

const [authorizeUrl, screenshotPath, clientRedirect] = process.argv.slice(2);
const browser = await launch();
try {
  const { page, reached } = await pageCatchingClient(browser, clientRedirect);
  const response = await page.goto(authorizeUrl);
  const consentStatus = response.status();
  const consentUrl = page.url();
  const heading = (await page.textContent('h1')).trim();
  const framing = response.headers()['x-frame-options'];
  await page.screenshot({ path: screenshotPath, fullPage: true });
  await page.getByRole('button', { name: 'Allow' }).click();
  await page.waitForURL((url) => url.href.startsWith(clientRedirect), { timeout: 20000 });
  console.log(JSON.stringify({ consentStatus, consentUrl, heading, framing, clientReached: reached() }));
} finally {
  await browser.close();
}
