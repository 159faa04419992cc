"""The soak's upstreams that are not plain HTTP apps (see ``bench.apps`` for those), one process each.

``python -m bench.soak_apps smtp --port N``
    An aiosmtpd server that accepts every message and keeps none of them (a count only), so that
    a long soak does not grow it.

``python -m bench.soak_apps moto --port N --bucket NAME``
    moto in server mode (S3, DynamoDB...) on 127.0.0.1, the bucket created before it reports ready:
    ``GET /bench/ready`` answers 200 once the bucket exists. Its sockets set TCP_NODELAY, without which
    werkzeug's separate header and body writes wait for the client's delayed ACK (about 40 ms a call).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["main"]

REGION = "us-east-1"
# moto accepts any credentials; the connector signs its requests with these.
ACCESS_KEY_ID = "AKIDSOAKBENCH"
SECRET_ACCESS_KEY = "soak-bench-secret-key"  # noqa: S105 - a fake, for moto


class _Sink:
    """aiosmtpd handler: accepts the message, counts it, drops it."""

    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd names it
        self.messages += 1
        return f"250 2.0.0 Ok: queued as S{self.messages}"


async def _smtp(port: int) -> None:
    from aiosmtpd.smtp import SMTP

    handler = _Sink()
    loop = asyncio.get_running_loop()
    # A fixed hostname: aiosmtpd's default looks up this host's FQDN.
    server = await loop.create_server(lambda: SMTP(handler, hostname="soak-smtp"), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _moto(port: int, bucket: str) -> None:
    import boto3  # type: ignore[import-untyped]
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class NoDelayHandler(MotoRequestHandler):
        disable_nagle_algorithm = True

    ready = threading.Event()
    moto_app: WsgiApp = DomainDispatcherApplication(create_backend_app)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/bench/ready":
            status = "200 OK" if ready.is_set() else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "0")])
            return [b""]
        return moto_app(environ, start_response)

    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=NoDelayHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    s3.create_bucket(Bucket=bucket)
    s3.close()
    ready.set()
    thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_apps", description=__doc__)
    sub = parser.add_subparsers(dest="app", required=True)
    smtp = sub.add_parser("smtp", help="an SMTP server that drops what it accepts")
    smtp.add_argument("--port", type=int, required=True)
    moto = sub.add_parser("moto", help="moto's S3 (and other AWS services) with one bucket")
    moto.add_argument("--port", type=int, required=True)
    moto.add_argument("--bucket", required=True)
    args = parser.parse_args()
    if args.app == "smtp":
        asyncio.run(_smtp(args.port))
    else:
        _moto(args.port, args.bucket)


if __name__ == "__main__":
    main()
