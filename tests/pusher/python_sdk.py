"""Pusher's Python server SDK (PyPI `pusher`) against roomcast's Pusher HTTP API.

Usage: python3 python_sdk.py HOST PORT APP_ID SECRET. Prints one JSON object with what each call
answered; a call the SDK refuses is reported by its error class. The Node test checks it.
"""

import json
import sys

import pusher
from pusher.errors import PusherBadAuth

host, port, app_id, secret = sys.argv[1:5]


def client(key_secret):
    return pusher.Pusher(app_id=app_id, key=app_id, secret=key_secret, host=host, port=int(port), ssl=False)


sdk = client(secret)
out = {
    "trigger": sdk.trigger("py-room", "from-python", {"n": 1}),
    "trigger_batch": sdk.trigger_batch([{"channel": "py-room", "name": "batched", "data": {"n": 2}}]),
    "channels_info": sdk.channels_info(prefix_filter="presence-", attributes=["user_count"]),
    "channel_info": sdk.channel_info("py-room", ["subscription_count"]),
    "users_info": sdk.users_info("presence-py"),
}
try:
    client("wrong-secret").trigger("py-room", "forged", {})
    out["forged"] = "accepted"
except PusherBadAuth:
    out["forged"] = "PusherBadAuth"
print(json.dumps(out, sort_keys=True))
