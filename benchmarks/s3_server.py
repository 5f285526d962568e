"""moto's S3 server, counting the requests it serves on its own side.

    python -m benchmarks.s3_server -H 127.0.0.1 -p 5000

moto's S3 application under werkzeug, threaded, as ``moto_server`` serves it, with two
differences: it serves S3 only, and it does not log each request. ``moto_server`` puts every
request through a dispatcher that finds the service from the host and headers, and that lookup
lists moto's service modules on disk each time: a third of the server's CPU per request, which on
a small machine is taken from the workers being measured. A WSGI layer counts every request by
method and bucket before moto handles it. Counts
are read and reset over HTTP, at a path no S3 request can have (bucket names have no
underscore)::

    GET  /_poundcam/requests        {"total": 12, "by_method": {"GET": 4, ...},
                                     "by_bucket": {"images": {"GET": 4}, ...}}
    POST /_poundcam/requests/reset

The load benchmark and the integration tests use it to count what the pipeline asks of S3
where S3 itself would bill it, not in the client.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from collections import Counter

COUNTS_PATH = "/_poundcam/requests"


class CountingApp:
    """WSGI middleware: counts requests by method and by bucket (first path segment)."""

    def __init__(self, app):
        self.app = app
        self._lock = threading.Lock()
        self._by_bucket: dict[str, Counter] = {}

    def counts(self) -> dict:
        with self._lock:
            by_method: Counter = Counter()
            for c in self._by_bucket.values():
                by_method.update(c)
            return {
                "total": sum(by_method.values()),
                "by_method": dict(by_method),
                "by_bucket": {b: dict(c) for b, c in self._by_bucket.items()},
            }

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(COUNTS_PATH):
            if path == COUNTS_PATH + "/reset" and environ["REQUEST_METHOD"] == "POST":
                with self._lock:
                    self._by_bucket.clear()
            body = json.dumps(self.counts()).encode()
            start_response(
                "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]
        bucket = path.lstrip("/").split("/", 1)[0]
        with self._lock:
            self._by_bucket.setdefault(bucket, Counter())[environ["REQUEST_METHOD"]] += 1
        return self.app(environ, start_response)


def main(argv: list[str] | None = None) -> None:
    import logging

    from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-H", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, required=True)
    args = ap.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    app = create_backend_app("s3")
    run_simple(args.host, args.port, CountingApp(app), threaded=True, request_handler=MotoRequestHandler)


def fetch_counts(url: str, reset: bool = False) -> dict:
    """The counts of the server at ``url`` (``http://host:port``); ``reset`` zeroes them after."""
    import urllib.request

    with urllib.request.urlopen(url + COUNTS_PATH, timeout=10) as resp:
        counts = json.loads(resp.read())
    if reset:
        req = urllib.request.Request(url + COUNTS_PATH + "/reset", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=10).close()
    return counts


if __name__ == "__main__":
    main()
