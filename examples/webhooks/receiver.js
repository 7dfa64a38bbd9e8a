// A roomcast webhook receiver that verifies every delivery (Node.js, no dependencies).
//
//     WEBHOOK_SECRET=whsec_... PORT=8000 node receiver.js
//
// Checks, in order: the timestamp is within 5 minutes (a captured request cannot be replayed
// later), the signature is HMAC-SHA256(secret, "{timestamp}.{raw body}") compared in constant
// time, and the delivery id was not seen before (retries resend the same delivery). Answers 2xx
// only after the event is handled; any other answer makes roomcast retry.
'use strict';
const crypto = require('node:crypto');
const http = require('node:http');

const SECRET = process.env.WEBHOOK_SECRET;
const TOLERANCE_S = 300;
const seen = new Set(); // use a store with expiry in production

// Returns the parsed event, or throws an Error saying why the request is refused.
function verify(headers, body) {
  const timestamp = headers['x-roomcast-timestamp'] || '';
  const signature = Buffer.from(headers['x-roomcast-signature'] || '');
  if (!/^\d+$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_S) {
    throw new Error('stale or missing timestamp');
  }
  const mac = crypto.createHmac('sha256', SECRET).update(`${timestamp}.`).update(body).digest('hex');
  const expected = Buffer.from(`sha256=${mac}`);
  if (signature.length !== expected.length || !crypto.timingSafeEqual(signature, expected)) {
    throw new Error('bad signature');
  }
  return JSON.parse(body.toString('utf8'));
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let event;
    try {
      event = verify(req.headers, Buffer.concat(chunks)); // the raw bytes, never re-serialized JSON
    } catch (why) {
      console.log('rejected', why.message);
      res.writeHead(401).end();
      return;
    }
    if (seen.has(event.id)) {
      console.log('duplicate', event.id);
    } else {
      seen.add(event.id);
      console.log('verified', event.id, event.event, event.room, JSON.stringify(event.data));
    }
    res.writeHead(204).end();
  });
});

server.listen(Number(process.env.PORT || 8000), '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`listening on ${address}:${port}`);
});
