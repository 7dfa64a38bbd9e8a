"""Pusher's Python server SDK (PyPI `pusher`) validates Pusher-format webhook deliveries.

Usage: python3 python_webhook.py APP_ID SECRET < deliveries.json, where the JSON is a list of
{"key", "signature", "body"}. Prints a JSON list: each delivery's events as the SDK read them, or
null when the SDK refused it.
"""

import json
import sys

import pusher

app_id, secret = sys.argv[1:3]
sdk = pusher.Pusher(app_id=app_id, key=app_id, secret=secret, ssl=False)
results = []
for delivery in json.load(sys.stdin):
    valid = sdk.validate_webhook(key=delivery["key"], signature=delivery["signature"], body=delivery["body"])
    results.append(valid["events"] if valid else None)
print(json.dumps(results))
