// Opens a page of the hub in Debian's Chromium (driven by playwright-core) as an air-gapped
// host would: every request to another host than the hub's is aborted and reported. Waits until
// the page shows every given text, then takes a screenshot.
// Protocol with the Rust test on stdout: "BLOCKED <url>" for each request to another host, then
// "SHOWN" once every text is on the page, then "SHOT <path>".
// Usage: node offline.mjs <page-url> <screenshot-path> <text>...
import { launch } from "./chromium.mjs";

const [pageUrl, shot, ...texts] = process.argv.slice(2);
const hubHost = new URL(pageUrl).host;
const context = await launch();
const timer = setTimeout(() => { console.log("TIMEOUT"); process.exit(2); }, 30000);
try {
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.host === hubHost || url.protocol === "data:" || url.protocol === "blob:") return route.continue();
    console.log("BLOCKED " + url.href);
    return route.abort();
  });
  const page = context.pages()[0] ?? await context.newPage();
  await page.goto(pageUrl, { waitUntil: "load" });
  await page.waitForFunction(
    (wanted) => wanted.every((t) => document.body && document.body.innerText.includes(t)), texts);
  console.log("SHOWN");
  await page.screenshot({ path: shot, fullPage: false });
  console.log("SHOT " + shot);
} finally {
  clearTimeout(timer);
  await context.close();
}
