"""The ``watcher`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence

from watcher import __version__
from watcher.logs import configure_logging, register_secret

API_KEYS_ENV = "WATCHER_API_KEYS"
UPSTREAM_KEY_ENV = "WATCHER_UPSTREAM_API_KEY"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    configure_logging(args.log_level)
    return int(args.handler(args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="watcher", description=__doc__)
    parser.add_argument("--version", action="version", version=f"watcher {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("WATCHER_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(sub)
    return parser


def _add_serve(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--ttl-seconds", type=int, default=45, help="stream lease length")
    p.add_argument("--retention-seconds", type=int, default=600, help="frame retention")
    p.add_argument("--tombstone-seconds", type=int, default=300,
                   help="how long ended streams stay readable")
    p.add_argument("--max-mb-per-stream", type=float, default=40,
                   help="memory cap of one stream's retained frames")
    p.add_argument("--public-url", help="base URL publishers use to reach this server "
                   "(default: the URL each request came in on)")
    p.add_argument("--no-vision", action="store_true", help="do not serve local/vision")
    p.add_argument("--upstream-url", metavar="URL",
                   help="an OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio, "
                   "OpenAI) to answer with, e.g. http://127.0.0.1:11434/v1")
    p.add_argument("--upstream-model", action="append", default=[], metavar="NAME[=UPSTREAM]",
                   help="list NAME and send it upstream as UPSTREAM (repeatable)")
    p.add_argument("--upstream-api-key", metavar="KEY",
                   help=f"key for the upstream server (also ${UPSTREAM_KEY_ENV})")
    p.add_argument("--upstream-timeout", type=float, default=60.0, metavar="SECONDS")
    p.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from watcher.errors import ConfigError
    from watcher.server.app import create_app
    from watcher.server.settings import ServerSettings

    keys = list(args.api_key) + [
        k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    if not keys:
        generated = f"ovs_{secrets.token_urlsafe(24)}"
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
            public_url=args.public_url,
            enable_vision=not args.no_vision,
            upstreams=_upstreams(args),
        )
    except (ValueError, ConfigError) as exc:
        print(f"watcher serve: {exc}", file=sys.stderr)
        return 2
    print(f"Serving the Overshoot API at http://{args.host}:{args.port}/v1beta", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None,
                access_log=False)
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
