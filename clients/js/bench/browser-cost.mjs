// What the client costs a page: Chromium receives EVENTS_PER_S events per second for SECONDS
// through roomcast-client, and again through a bare WebSocket that only parses each frame; the
// page's main-thread task and script time (CDP Performance.getMetrics: TaskDuration,
// ScriptDuration) per event are printed for both.
// Usage: node bench/browser-cost.mjs   (HUB_BIN picks the hub binary; release is best)
import { launch } from '../test/chromium.mjs';
import { api, cleanup, createApp, startHub, token } from '../test/support.mjs';

const rate = Number(process.env.EVENTS_PER_S ?? 1000);
const seconds = Number(process.env.SECONDS ?? 10);

const hub = await startHub();
const app = await createApp(hub, { app_id: 'bench-page', rate_limit: 1000000 });
const browser = await launch();

async function run(kind) {
  const page = await browser.newPage();
  await page.goto(`${hub.http}/api/health`);
  const clientToken = await token(hub, app, {});
  await page.evaluate(
    async ({ kind, ws, clientToken }) => {
      window.received = 0;
      if (kind === 'library') {
        const { Roomcast } = await import('/client/roomcast.js');
        const rc = new Roomcast(ws, { token: clientToken });
        const sub = rc.subscribe('bench');
        sub.on('event', () => window.received++);
        await new Promise((resolve) => { sub.on('subscribed', resolve); rc.connect(); });
      } else {
        const socket = new WebSocket(`${ws}?token=${clientToken}`);
        await new Promise((resolve) => {
          socket.onmessage = (m) => {
            const f = JSON.parse(m.data);
            if (f.type === 'connected') socket.send(JSON.stringify({ type: 'subscribe', room: 'bench', id: 1 }));
            else if (f.type === 'subscribed') resolve();
            else if (f.type === 'event') window.received++;
          };
        });
      }
    },
    { kind, ws: hub.ws, clientToken },
  );
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  const metrics = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  const start = await metrics();
  // Batches of 10 every 10 ms.
  const batch = Array.from({ length: 10 }, (_, i) => ({ room: 'bench', event: 'tick', data: { i, text: 'a typical small payload' } }));
  const total = rate * seconds;
  const began = Date.now();
  for (let sent = 0; sent < total; sent += 10) {
    await api(hub, 'POST', '/api/broadcast/batch', { key: app.api_key, body: { events: batch } });
    const due = began + ((sent + 10) / rate) * 1000;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  await page.waitForFunction((total) => window.received >= total, total, { timeout: 30000 });
  const end = await metrics();
  const received = await page.evaluate(() => window.received);
  const per = (name) => (((end[name] - start[name]) * 1e6) / received).toFixed(2);
  console.log(`${kind.padEnd(8)} ${received} events in ${((Date.now() - began) / 1000).toFixed(1)} s: task ${per('TaskDuration')} µs/event, script ${per('ScriptDuration')} µs/event`);
  await page.close();
}

for (const kind of ['bare', 'library', 'bare', 'library']) await run(kind);
await browser.close();
await hub.stop();
cleanup();
