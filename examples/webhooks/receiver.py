#!/usr/bin/env python3
"""A roomcast webhook receiver that verifies every delivery (standard library only).

    WEBHOOK_SECRET=whsec_... PORT=8000 python3 receiver.py

Checks, in order: the timestamp is within 5 minutes (a captured request cannot be replayed
later), the signature is HMAC-SHA256(secret, "{timestamp}.{raw body}") compared in constant
time, and the delivery id was not seen before (retries resend the same delivery). Answers 2xx
only after the event is handled; any other answer makes roomcast retry.
"""
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ["WEBHOOK_SECRET"].encode()
TOLERANCE_S = 300
seen = set()  # use a store with expiry in production


def verify(headers, body):
    """Returns the parsed event, or raises ValueError saying why the request is refused."""
    timestamp = headers.get("X-Roomcast-Timestamp", "")
    signature = headers.get("X-Roomcast-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_S:
        raise ValueError("stale or missing timestamp")
    expected = hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest("sha256=" + expected, signature):
        raise ValueError("bad signature")
    return json.loads(body)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            event = verify(self.headers, body)
        except ValueError as why:
            print("rejected", why, flush=True)
            self.send_response(401)
            self.end_headers()
            return
        if event["id"] in seen:
            print("duplicate", event["id"], flush=True)
        else:
            seen.add(event["id"])
            print("verified", event["id"], event["event"], event["room"], json.dumps(event["data"]), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8000"))), Handler)
print("listening on %s:%d" % server.server_address, flush=True)
server.serve_forever()
