"""The floor of this stack: a no-op aiohttp TLS server that answers every review `allowed`.

It does what any admission webhook on aiohttp must do and nothing more: accept TLS
(1.2 minimum, same as the webhook), read the body, parse the AdmissionReview JSON
with orjson, and answer `allowed: true` echoing the uid, serialised with orjson.
No policies, no model validation, no metrics, no logging per request.

    python bench/baseline_server.py --host 127.0.0.1 --port PORT --cert-dir DIR

`POST /mutate` and `POST /validate` answer the same way; `GET /readyz` answers 200.
It stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
from pathlib import Path

import orjson
from aiohttp import web


async def review(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        doc = orjson.loads(body)
        api_version = doc["apiVersion"]
        uid = doc["request"]["uid"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return web.Response(status=400, body=b'{"error":"not an AdmissionReview"}',
                            content_type="application/json")
    answer = {"apiVersion": api_version, "kind": "AdmissionReview",
              "response": {"uid": uid, "allowed": True}}
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def readyz(_request: web.Request) -> web.Response:
    return web.Response(body=b'{"ready":true}', content_type="application/json")


def tls_context(cert_dir: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    return context


async def serve(host: str, port: int, cert_dir: Path) -> None:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/mutate", review)
    app.router.add_post("/validate", review)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls_context(cert_dir))
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-dir", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.cert_dir))


if __name__ == "__main__":
    main()
