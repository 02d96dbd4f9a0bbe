"""An MQTT broker in Python (amqtt), for `groundstation demo` on a machine without Mosquitto.

    python -m groundstation.deploy.embedded_broker --port 1883

Anonymous, loopback only, no persistence and no ACL: enough to watch the ships fly, never a
ground station's broker (Mosquitto with deploy/mosquitto/ is). Needs the optional extra:
pip install 'groundstation[embedded]'. groundstation.deploy.servers.EmbeddedBroker runs it as a
child process, so it does not share a core with the console or the ingest's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

INSTALL_HINT = "pip install 'groundstation[embedded]' (or install Mosquitto: apt-get install " \
               "mosquitto)"


def available() -> bool:
    try:
        import amqtt.broker  # noqa: F401
    except ImportError:
        return False
    return True


def broker_config(host: str, port: int) -> dict[str, object]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}",
                                  "max_connections": 64}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


async def serve(host: str, port: int) -> None:
    from amqtt.broker import Broker

    broker = Broker(broker_config(host, port))
    await broker.start()
    print(f"embedded MQTT broker (amqtt) listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m groundstation.deploy.embedded_broker",
        description="A small MQTT broker in Python for the demo when Mosquitto is not "
                    "installed: anonymous, no persistence, no ACL.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=1883, help="port to listen on")
    args = parser.parse_args(argv)
    if not available():
        print(f"error: the embedded broker needs amqtt: {INSTALL_HINT}", file=sys.stderr)
        return 1
    # amqtt logs every connection at INFO and warns about its deprecated $SYS settings.
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
