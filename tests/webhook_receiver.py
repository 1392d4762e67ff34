"""A webhook receiver for the tests: verifies every request with the
`standardwebhooks` package (an implementation independent of gitbroker's)
and prints one JSON line per request on stdout.

    python webhook_receiver.py --secret whsec_... [--fail-first N] [--hang-first N]

The first line is `{"port": N}`. Each request's line has the webhook id, its
attempt number (per id), whether the signature verified, the answer sent
and the parsed payload. `--fail-first N` answers 500 to the first N
attempts of each id, `--hang-first N` never answers them (until the
process ends).
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

parser = argparse.ArgumentParser()
parser.add_argument("--secret", required=True)
parser.add_argument("--fail-first", type=int, default=0)
parser.add_argument("--hang-first", type=int, default=0)
args = parser.parse_args()

webhook = Webhook(args.secret)
attempts = {}
lock = threading.Lock()


def report(line):
    with lock:
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def answer(self, status):
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        msg_id = self.headers.get("webhook-id", "")
        with lock:
            attempts[msg_id] = attempts.get(msg_id, 0) + 1
            attempt = attempts[msg_id]
        line = {
            "path": self.path,
            "id": msg_id,
            "attempt": attempt,
            "timestamp": self.headers.get("webhook-timestamp"),
            "signature": self.headers.get("webhook-signature"),
            "body": body.decode("utf-8", "replace"),
        }
        try:
            line["payload"] = webhook.verify(body, dict(self.headers.items()))
            line["verified"] = True
        except WebhookVerificationError as e:
            line["verified"] = False
            line["error"] = str(e)
            line["answer"] = 401
            report(line)
            return self.answer(401)
        if attempt <= args.hang_first:
            line["answer"] = "hang"
            report(line)
            time.sleep(3600)
            return
        if attempt <= args.hang_first + args.fail_first:
            line["answer"] = 500
            report(line)
            return self.answer(500)
        line["answer"] = 204
        report(line)
        self.answer(204)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
report({"port": server.server_address[1]})
server.serve_forever()
