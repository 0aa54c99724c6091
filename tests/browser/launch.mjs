// What every browser script of the suite shares: headless Debian Chromium with the flags this
// machine's closed network needs, and a page that answers the client's redirect URI itself
// (nothing listens there) and records where the bridge sent the browser.
import { chromium } from 'playwright-core';

export async function launch() {
  return chromium.launch({
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
}

/// A new page whose `reached()` is the client redirect URI the browser arrived at, or null.
export async function pageCatchingClient(browser, clientRedirect) {
  const page = await browser.newPage();
  let clientReached = null;
  await page.route(
    (url) => url.href.startsWith(clientRedirect),
    (route) => {
      clientReached = route.request().url();
      return route.fulfill({ status: 200, contentType: 'text/plain', body: 'client reached' });
    },
  );
  return { page, reached: () => clientReached };
}
