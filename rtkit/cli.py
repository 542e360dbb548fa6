"""The ``rtkit`` command: ``rtkit emulator`` serves the local Realtime API, ``rtkit demo`` runs one spoken turn."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from rtkit import __version__
from rtkit.emulator.config import DEFAULT_API_KEY, EmulatorConfig
from rtkit.emulator.cors import web_origin
from rtkit.errors import ConfigurationError, RtkitError


def _latency(value: str) -> tuple[str, float]:
    endpoint, _, seconds = value.partition("=")
    if endpoint not in ("client_secrets", "calls", "websocket") or not seconds:
        raise argparse.ArgumentTypeError("use ENDPOINT=SECONDS with ENDPOINT client_secrets, calls or websocket")
    return endpoint, float(seconds)


def _web_origin(value: str) -> str:
    try:
        return web_origin(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtkit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rtkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    emu = sub.add_parser("emulator", help="serve a local emulator of the Realtime API")
    emu.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 serves a classroom LAN")
    emu.add_argument("--port", type=int, default=8765)
    emu_key = emu.add_mutually_exclusive_group()
    emu_key.add_argument(
        "--api-key",
        default=None,
        help=f"main key clients must present (default: $RTKIT_EMULATOR_API_KEY or {DEFAULT_API_KEY}); "
        "a value given here shows in `ps`: prefer the variable or --api-key-file",
    )
    emu_key.add_argument(
        "--api-key-file", default=None, metavar="PATH", help="read the main key from this file (first line)"
    )
    emu.add_argument("--admin-token", default=None, help="token for the /_rtkit fault endpoints (default: random)")
    emu.add_argument("--responder", choices=["echo", "tone"], default="echo")
    emu.add_argument(
        "--cassette",
        default=None,
        metavar="PATH",
        help="replay this cassette as the model (rtkit.cassette), instead of --responder",
    )
    emu.add_argument(
        "--cassette-speed",
        type=float,
        default=None,
        metavar="N",
        help="start the cassette's replies N times sooner than recorded (default 1)",
    )
    emu.add_argument("--generation-speed", type=float, default=2.0)
    emu.add_argument("--max-session-seconds", type=float, default=3600.0)
    emu.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="carry WebRTC calls in N worker processes (one holds ~10 calls; use the cores)",
    )
    bounds = EmulatorConfig.model_fields
    emu.add_argument(
        "--call-connect-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"close a call not connected SECONDS after answering (default {bounds['call_connect_timeout'].default:g})",
    )
    emu.add_argument(
        "--call-peer-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"close a call whose peer sent nothing for SECONDS (default {bounds['call_peer_timeout'].default:g})",
    )
    emu.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        type=_web_origin,
        metavar="ORIGIN",
        help="let only pages from ORIGIN (repeatable) POST /v1/realtime/calls; default: any origin, as the API "
        "(or $RTKIT_EMULATOR_CORS_ORIGINS, a JSON list)",
    )
    faults = emu.add_argument_group("fault injection")
    faults.add_argument("--fail-mints", type=int, default=0, metavar="N", help="fail the next N client_secrets")
    faults.add_argument("--fail-status", type=int, choices=[429, 500, 502, 503], default=429)
    faults.add_argument("--reject-calls", type=int, default=0, metavar="N", help="reject the next N calls")
    faults.add_argument("--key-ttl", type=int, default=None, metavar="SECONDS", help="override key lifetimes")
    faults.add_argument("--latency", type=_latency, action="append", default=[], metavar="ENDPOINT=SECONDS")
    faults.add_argument("--drop-calls-after", type=float, default=None, metavar="SECONDS")
    faults.add_argument("--block-media", action="store_true", help="answer calls but let no media through")
    faults.add_argument(
        "--single-use-keys", action="store_true", help="an ephemeral key opens one session; its second use is a 401"
    )
    emu.add_argument("--log-level", default="info")

    broker = sub.add_parser("broker", help="serve the token broker (POST /api/client-secret)")
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int, default=8000)
    broker.add_argument(
        "--upstream",
        default=None,
        metavar="URL",
        help="Realtime API base URL (default https://api.openai.com/v1; the emulator's …/v1 offline)",
    )
    broker.add_argument(
        "--api-key-file",
        default=None,
        metavar="PATH",
        help="read the main key from this file (first line); default: $RTKIT_BROKER_API_KEY or $OPENAI_API_KEY. "
        "There is no flag taking the key itself: it would show in `ps`",
    )
    broker.add_argument("--dev", action="store_true", help="allow anonymous callers (laptop demos only)")
    broker.add_argument(
        "--app-token",
        action="append",
        default=[],
        metavar="NAME=SHA256",
        help="an app allowed in, with the SHA-256 of its token (see `rtkit hash-token`)",
    )
    broker.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN")
    broker.add_argument(
        "--public-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="the origin browsers reach this broker at, when not its listening address (DNS name, TLS proxy)",
    )
    broker.add_argument("--redis-url", default=None, help="share cache and rate limits between processes")
    broker.add_argument("--rate-limit-ip", default=None, metavar="LIMIT", help='e.g. "30/minute"')
    broker.add_argument("--rate-limit-caller", default=None, metavar="LIMIT")
    broker.add_argument("--key-ttl", type=int, default=None, metavar="SECONDS")
    broker.add_argument("--cache-margin", type=float, default=None, metavar="SECONDS")
    broker.add_argument(
        "--key-policy",
        choices=["reuse", "single-use"],
        default=None,
        help="reuse: serve a caller the same cached key until it nears expiry (default); "
        "single-use: hand each key out once, from a small pool minted ahead",
    )

    cassette = sub.add_parser("cassette", help="compare or check recorded conversations (rtkit.cassette)")
    tape = cassette.add_subparsers(dest="cassette_command", required=True)
    compare = tape.add_parser("diff", help="where two recordings' event sequences differ (exit 1 if they do)")
    compare.add_argument("a", metavar="A")
    compare.add_argument("b", metavar="B")
    compare.add_argument("--exact", action="store_true", help="count every delta (default: a run of deltas is one)")
    check = tape.add_parser("scan", help="list any key or secret left in a cassette (exit 1 if there is one)")
    check.add_argument("path", metavar="PATH")

    sub.add_parser("hash-token", help="read an app token on stdin, print the SHA-256 the broker stores")

    demo = sub.add_parser("demo", help="start an emulator and run one spoken turn against it")
    demo.add_argument("--text", default="Hello from the realtime kit. What is the weather like in Paris today?")

    from rtkit.doctor import NEEDS

    doctor = sub.add_parser("doctor", help="check this machine for what rtkit needs, one line per item")
    doctor.add_argument(
        "--need",
        action="append",
        choices=NEEDS,
        default=[],
        help="make these items required: missing is FAIL (exit 1), not a warning; repeatable",
    )
    doctor.add_argument(
        "--redis-url", default=None, metavar="URL", help="PING this Redis (default $RTKIT_BROKER_REDIS_URL)"
    )
    doctor.add_argument(
        "--base-url", default=None, metavar="URL", help="API to try a mint against (default https://api.openai.com/v1)"
    )
    doctor.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="for the mint and the PING")
    return parser


def _read_key_file(path: str) -> str:
    """The main key from a file (a mounted secret, a ``chmod 600`` file), so that it never appears in the
    process's command line. Errors name the file, never its content."""
    try:
        with open(path, encoding="utf-8") as f:
            key = f.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"Cannot read the API key file {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}."
        ) from None
    if not key:
        raise ConfigurationError(f"The API key file {path} is empty.", hint="put the key on its first line")
    return key


def _invalid(server: str, exc: ValidationError) -> ConfigurationError:
    """Settings refused: name the setting and the problem, never the value (it may be a secret)."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return ConfigurationError(f"Invalid {server} settings: {problems}")


def _stop_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: either one stops the server cleanly (an emulator stops its worker
    processes too), as a service manager, a container runtime or Ctrl-C expects. Installed before the server
    starts, so that a signal right after the banner is not a KeyboardInterrupt in the middle of anything."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve(args: argparse.Namespace) -> None:
    stop = _stop_signals()
    from rtkit.emulator import Emulator

    settings: dict[str, object] = {
        "host": args.host,
        "port": args.port,
        "responder": args.responder,
        "generation_speed": args.generation_speed,
        "max_session_seconds": args.max_session_seconds,
        "workers": args.workers,
    }
    if args.single_use_keys:  # unset leaves $RTKIT_EMULATOR_SINGLE_USE_KEYS its say
        settings["single_use_keys"] = True
    if args.api_key:
        settings["api_key"] = args.api_key
    elif args.api_key_file:
        settings["api_key"] = _read_key_file(args.api_key_file)
    if args.admin_token:
        settings["admin_token"] = args.admin_token
    # Unset bounds are left to EmulatorConfig: its default, or $RTKIT_EMULATOR_CALL_*_TIMEOUT.
    for bound in ("call_connect_timeout", "call_peer_timeout"):
        if getattr(args, bound) is not None:
            settings[bound] = getattr(args, bound)
    if args.cassette:
        settings["cassette"] = args.cassette
    if args.cassette_speed is not None:
        settings["cassette_speed"] = args.cassette_speed
    if args.cors_origin:  # unset leaves $RTKIT_EMULATOR_CORS_ORIGINS, or any origin, its say
        settings["cors_origins"] = args.cors_origin
    try:
        config = EmulatorConfig(**settings)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise _invalid("emulator", exc) from None
    emulator = Emulator(config)
    f = emulator.faults
    if args.fail_mints:
        f.fail_next_mints(args.fail_mints, status=args.fail_status)
    if args.reject_calls:
        f.reject_next_calls(args.reject_calls, status=args.fail_status if args.fail_status != 429 else 503)
    f.key_ttl_override = args.key_ttl
    f.drop_calls_after = args.drop_calls_after
    f.block_media = args.block_media
    for endpoint, seconds in args.latency:
        f.add_latency(endpoint, seconds)
    await emulator.start()
    if args.api_key or args.api_key_file:
        key_source = "--api-key" if args.api_key else f"--api-key-file {args.api_key_file}"
    else:
        key_source = (
            "$RTKIT_EMULATOR_API_KEY" if os.environ.get("RTKIT_EMULATOR_API_KEY") else f"default {DEFAULT_API_KEY}"
        )
    print(f"rtkit emulator on {emulator.base_url}  (WebSocket {emulator.websocket_url})", flush=True)
    print(f"  main key: {key_source}; ICE: {'loopback only' if emulator.loopback_ice else 'all interfaces'}")
    pages = "any origin" if emulator.cors.any_origin else ", ".join(emulator.cors.origins) or "no origin"
    print(f"  browser pages may POST /v1/realtime/calls from: {pages}")
    if emulator.config.cassette is not None:
        print(f"  the model replays the cassette {emulator.config.cassette}")
    print(f"  admin token for /_rtkit (keep it to yourself): {emulator.admin_token}", flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


async def _broker(args: argparse.Namespace) -> None:
    stop = _stop_signals()
    from rtkit.broker import Broker, BrokerSettings
    from rtkit.broker.audit import JsonLineFormatter

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLineFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per upstream mint is noise
    settings: dict[str, object] = {"dev_mode": args.dev}
    if args.api_key_file:
        settings["api_key"] = _read_key_file(args.api_key_file)
    options = {
        "upstream_url": args.upstream,
        "redis_url": args.redis_url,
        "rate_limit_per_ip": args.rate_limit_ip,
        "rate_limit_per_caller": args.rate_limit_caller,
        "key_ttl_seconds": args.key_ttl,
        "cache_margin_seconds": args.cache_margin,
        "key_policy": args.key_policy,
    }
    settings.update({k: v for k, v in options.items() if v is not None})
    if args.allow_origin:
        settings["allowed_origins"] = args.allow_origin
    if args.public_origin:
        settings["public_origins"] = args.public_origin
    if args.app_token:
        tokens = dict(item.partition("=")[::2] for item in args.app_token)
        settings["app_tokens"] = tokens
    try:
        config = BrokerSettings(**settings)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise _invalid("broker", exc) from None
    broker = Broker(config, host=args.host, port=args.port)
    await broker.start()
    logging.getLogger("rtkit.broker").info("broker on %s, upstream %s", broker.url, config.upstream_url)
    try:
        await stop.wait()
    finally:
        await broker.stop()


def _cassette(args: argparse.Namespace) -> int:
    from rtkit.cassette import diff, render_diff, scan

    if args.cassette_command == "diff":
        differences = diff(args.a, args.b, collapse=not args.exact)
        print(render_diff(differences, args.a, args.b))
        return 1 if differences else 0
    findings = scan(args.path)
    for finding in findings:
        print(f"{args.path}: {finding.where}: {finding.what}")
    if not findings:
        print(f"{args.path}: no keys or secrets found")
    return 1 if findings else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "emulator":
            logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
            asyncio.run(_serve(args))
        elif args.command == "broker":
            asyncio.run(_broker(args))
        elif args.command == "cassette":
            return _cassette(args)
        elif args.command == "hash-token":
            from rtkit.broker import hash_token

            print(hash_token(sys.stdin.readline().strip()))
        elif args.command == "demo":
            from rtkit.demo import run_demo

            asyncio.run(run_demo(args.text))
        elif args.command == "doctor":
            from rtkit.doctor import exit_status, render, run_checks

            checks = asyncio.run(
                run_checks(
                    env=os.environ,
                    needs=args.need,
                    redis_url=args.redis_url,
                    base_url=args.base_url,
                    timeout=args.timeout,
                )
            )
            print(render(checks))
            return exit_status(checks)
    except KeyboardInterrupt:
        return 130
    except RtkitError as err:
        print(f"rtkit: {err}", file=sys.stderr)
        return 2
    return 0
