// Opens examples/browser.html in Debian's Chromium (driven by playwright-core) and reports what
// it shows. Protocol with the Rust test on stdout: "READY" once the page says it is subscribed,
// then "EVENT <text>" for the first event line it renders, then "SHOT <path>" after a screenshot.
// Usage: node browser.mjs <page-url> <screenshot-path>
import { launch } from "./chromium.mjs";

const [pageUrl, shot] = process.argv.slice(2);
const context = await launch();
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
