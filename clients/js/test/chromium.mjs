// Debian's Chromium driven by playwright-core, as the suite launches it: headless, in a fresh
// temporary profile, with nothing that phones home.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export function launch() {
  return chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'roomcast-chromium-')), {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** The same Chromium as a browser in which each test opens its own context (its own cookies). */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * Lets `target` (a page or a context) reach only `host` (`127.0.0.1:port`): any other request
 * is aborted and its URL added to the returned list, which a test asserts empty.
 */
export async function onlyHost(target, host) {
  const elsewhere = [];
  await target.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.host === host) return route.continue();
    elsewhere.push(url.href);
    return route.abort();
  });
  return elsewhere;
}
