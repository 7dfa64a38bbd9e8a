// Opens examples/browser.html in Debian's Chromium (driven by playwright-core) and reports what
// it shows. Protocol with the Rust test on stdout: "READY" once the page says it is subscribed,
// then "EVENT <text>" for the first event line it renders, then "SHOT <path>" after a screenshot.
// Usage: node browser.mjs <page-url> <screenshot-path>
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [pageUrl, shot] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "roomcast-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const timer = setTimeout(() => { console.log("TIMEOUT"); process.exit(2); }, 30000);
try {
  const page = context.pages()[0] ?? await context.newPage();
  await page.goto(pageUrl);
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("subscribed"));
  console.log("READY");
  const entry = page.locator("#log .entry").first();
  await entry.waitFor();
  console.log("EVENT " + (await entry.textContent()));
  await page.screenshot({ path: shot });
  console.log("SHOT " + shot);
} finally {
  clearTimeout(timer);
  await context.close();
}
