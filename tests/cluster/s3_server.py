"""moto's S3 server answering one request at a time, for tests that race conditional writes.

    .cluster/moto-venv/bin/python tests/cluster/s3_server.py PORT

moto checks `If-None-Match` / `If-Match` and then stores the object in two steps, with no lock between
them, and its server (`moto_server`) handles requests in threads: two racing conditional PUTs can both
pass the check (seen here: 1 round in 100 with 8 writers let two creates of one key succeed). S3 decides
a conditional write atomically, so this server takes one request at a time (connections are still
accepted concurrently) to give moto S3's guarantee. It runs in moto's own environment, never the
project's: moto is not a dependency of newsbeam.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def main(port: int) -> None:
    app = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()

    def serial(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with one_at_a_time:
            return list(app(environ, start_response))

    run_simple("127.0.0.1", port, serial, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(int(sys.argv[1]))
