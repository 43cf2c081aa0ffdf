"""``watcher serve``: the embedded Overshoot-compatible server on its own (limit options
in :mod:`watcher.server.cliopts`)."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from watcher.logs import register_secret

API_KEYS_ENV = "WATCHER_API_KEYS"
UPSTREAM_KEY_ENV = "WATCHER_UPSTREAM_API_KEY"


def add_parser(sub: argparse._SubParsersAction) -> None:
    from watcher.server.cliopts import add_limit_options

    p = sub.add_parser(
        "serve", help="run the embedded Overshoot-compatible server",
        description="Serve the Overshoot API under /v1beta: leased streams fed over WHIP, "
        "ovs:// frame references, and model backends (local/frames, local/vision, and any "
        "OpenAI-compatible server given with --upstream-url).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8420, help="port to listen on (default %(default)s)")
    p.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help=f"accepted API key (repeatable; also ${API_KEYS_ENV}, comma-separated); "
                   "with none, one is generated and printed once")
    p.add_argument("--ttl-seconds", type=int, default=45, metavar="SECONDS",
                   help="stream lease length a keepalive renews to (default %(default)s; "
                   "300 for clients that keep alive every two minutes)")
    p.add_argument("--retention-seconds", type=int, default=600, metavar="SECONDS",
                   help="how long frames are retained (default %(default)s)")
    p.add_argument("--tombstone-seconds", type=int, default=300, metavar="SECONDS",
                   help="how long ended streams stay readable (default %(default)s)")
    p.add_argument("--max-mb-per-stream", type=float, default=40, metavar="MB",
                   help="memory cap of one stream's retained frames (default %(default)s)")
    p.add_argument("--max-stored-fps", type=float, default=5, metavar="FPS",
                   help="most frames per second stored per stream, whatever the publisher "
                   "sends (0: every frame; default %(default)s)")
    p.add_argument("--public-url", metavar="URL", help="base URL publishers use to reach "
                   "this server (default: the URL each request came in on)")
    p.add_argument("--no-vision", action="store_true",
                   help="do not serve local/vision (default: served)")
    p.add_argument("--upstream-url", metavar="URL",
                   help="an OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio, "
                   "OpenAI) to answer with, e.g. http://127.0.0.1:11434/v1 (default: none)")
    p.add_argument("--upstream-model", action="append", default=[], metavar="NAME[=UPSTREAM]",
                   help="list NAME and send it upstream as UPSTREAM (repeatable; default: "
                   "none)")
    p.add_argument("--upstream-api-key", metavar="KEY",
                   help=f"key for the upstream server (also ${UPSTREAM_KEY_ENV}; default: none)")
    p.add_argument("--upstream-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="deadline of one upstream request (default %(default)s)")
    add_limit_options(p)
    p.set_defaults(handler=_run)


def _listen(host: str, port: int) -> socket.socket | None:
    """A socket listening on host:port, or None after one line on stderr saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        print(f"watcher serve: cannot listen on {host}:{port}: {why}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from watcher.errors import ConfigError
    from watcher.server.app import create_app
    from watcher.server.cliopts import limit_settings
    from watcher.server.settings import ServerSettings
    from watcher.server.streams import generate_api_key

    listener = _listen(args.host, args.port)  # before anything is printed
    if listener is None:
        return 1
    keys = list(args.api_key) + [
        k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    if not keys:
        generated = generate_api_key()
        keys = [generated]
        print(f"No API key given; generated one for this run:\n  {generated}", flush=True)
    for key in keys:
        register_secret(key)
    try:
        settings = ServerSettings(
            api_keys=keys,
            ttl_seconds=args.ttl_seconds,
            retention_seconds=args.retention_seconds,
            tombstone_seconds=args.tombstone_seconds,
            max_mb_per_stream=args.max_mb_per_stream,
            max_stored_fps=args.max_stored_fps,
            public_url=args.public_url,
            enable_vision=not args.no_vision,
            upstreams=_upstreams(args),
            **limit_settings(args),
        )
    except (ValueError, ConfigError) as exc:
        listener.close()
        print(f"watcher serve: {exc}", file=sys.stderr)
        return 2
    print(f"Serving the Overshoot API at http://{args.host}:{args.port}/v1beta", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_config=None,
                                           access_log=False))
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
    return 0


def _upstreams(args: argparse.Namespace) -> list[dict]:
    if not args.upstream_url:
        if args.upstream_model:
            raise ValueError("--upstream-model needs --upstream-url")
        return []
    if not args.upstream_model:
        raise ValueError("--upstream-url needs at least one --upstream-model NAME[=UPSTREAM]")
    key = args.upstream_api_key or os.environ.get(UPSTREAM_KEY_ENV)
    register_secret(key)
    models = {}
    for spec in args.upstream_model:
        name, _, upstream_name = spec.partition("=")
        models[name.strip()] = (upstream_name or name).strip()
    return [{"base_url": args.upstream_url, "api_key": key, "models": models,
             "timeout_seconds": args.upstream_timeout}]
