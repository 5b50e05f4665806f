"""The `harvester` command."""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
from pathlib import Path
from typing import Any

from actors.cli.health import add_health_parser
from plugins.cli import add_parser as add_plugins_parser


def _endpoint(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _arg(text: str) -> Any:
    """A call argument: JSON or a Python literal if it parses, else the plain string."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    return text


def cmd_node(args: argparse.Namespace) -> int:
    from actors.cli.compose import build_node
    from actors.node.agent import cap_malloc_arenas
    from actors.node.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    cap_malloc_arenas()
    logging.basicConfig(level=args.log_level, format=f"%(asctime)s {cfg.name} %(levelname)s %(name)s: %(message)s")
    # APScheduler logs every job run at INFO; a node polls every few seconds.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
    from nameserver.security import TlsConfigError

    try:
        build_node(cfg, hal_mode=args.hal).run_forever()
    except TlsConfigError as exc:
        print(f"{cfg.path}: security: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_nameserver(args: argparse.Namespace) -> int:
    from nameserver.server import serve_forever

    logging.basicConfig(level=args.log_level)
    if args.ca or args.cert or args.key:
        from nameserver.security import TlsFiles, apply_tls

        if not (args.ca and args.cert and args.key):
            print("harvester nameserver: TLS needs all of --ca, --cert and --key", file=sys.stderr)
            return 2
        apply_tls(TlsFiles(args.ca, args.cert, args.key), serve=True)
    serve_forever(args.host, args.port, Path(args.storage) if args.storage else None, args.allow_insecure_lan)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from actors.cli.demo import Demo

    return Demo(Path(args.state_dir), web_port=args.port, ns_port=args.ns_port, tls=args.tls).run()


def cmd_certs(args: argparse.Namespace) -> int:
    try:
        from actors.cli.certs import run_cli
    except ImportError as exc:
        print(f"harvester certs needs the 'pki' extra (pip install 'wasi-harvester[pki]'): {exc}", file=sys.stderr)
        return 2

    nodes = args.node + getattr(args, "nodes", [])
    return run_cli(args.certs_command, Path(args.dir), nodes, args.user + getattr(args, "users", []), args.force)


def cmd_config_check(args: argparse.Namespace) -> int:
    from actors.node.config import ConfigError, check_fleet, load_config

    status = 0
    checked = []
    for path in args.files:
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            print(exc)
            status = 1
            continue
        checked.append(cfg)
        sensors = ", ".join(f"{s.name}({s.kind}, every {s.interval:g}s)" for s in cfg.sensors) or "none"
        print(f"{path}: ok — node {cfg.name}, {cfg.role}, {cfg.profile} profile, {cfg.hal} HAL; sensors: {sensors}")
    for problem in check_fleet(checked):
        print(problem)
        status = 1
    return status


def cmd_call(args: argparse.Namespace) -> int:
    from Pyro5 import errors as pyro_errors

    from actors.client import connect

    fleet = connect(*args.ns)
    try:
        result = fleet.actor(args.name).call(args.method, *[_arg(a) for a in args.args])
    except pyro_errors.NamingError as exc:
        print(f"harvester call: no actor {args.name!r} in the name server at {args.ns[0]}:{args.ns[1]} ({exc})",
              file=sys.stderr)
        return 3
    except pyro_errors.CommunicationError as exc:
        print(f"harvester call: cannot reach {args.name}: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:  # the remote error, typed; show it plainly
        print(f"harvester call: {args.name}.{args.method} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    return 0


def _when(ts: float | None) -> str:
    import time as _time

    return "-" if ts is None else _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(ts))


def cmd_jobs(args: argparse.Namespace) -> int:
    from actors.client import connect

    fleet = connect(*args.ns)
    nodes = [args.node] if args.node else sorted({n.split(".")[1] for n in fleet.names({"kind:jobs"})})
    if args.jobs_command == "run":
        if not args.node:
            print("harvester jobs run: --node is required", file=sys.stderr)
            return 2
        rec = fleet[args.node]["jobs"].run(args.name)
        print(json.dumps(rec, indent=2, ensure_ascii=False))
        return 1 if rec["last_error"] else 0
    rows = []
    for node in nodes:
        for job in fleet[node]["jobs"].list():
            outcome = f"error: {job['last_error']}" if job["last_error"] else (job["last_result"] or "-")
            took = f"{job['duration_ms']:.0f} ms" if job["duration_ms"] is not None else "-"
            rows.append((node, job["name"], job["trigger"], _when(job["next_run"]), _when(job["last_run"]), took,
                         outcome if job["enabled"] else "disabled"))
    header = ("NODE", "JOB", "TRIGGER", "NEXT RUN", "LAST RUN", "TOOK", "LAST RESULT")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(6)]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r[:6], widths, strict=True)) + "  " + str(r[6]))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from actors.hub.tokens import TokenFileError, Tokens

    try:
        tokens = Tokens(Path(args.file))
        print(tokens.data()["operator"] if args.operator else tokens.ensure_node(args.node))
    except (TokenFileError, ValueError, OSError) as exc:
        print(f"harvester token: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from actors.client import connect

    fleet = connect(*args.ns)
    rows = []
    for name, (_uri, tags) in sorted(fleet.listing().items()):
        meta = dict(t.split(":", 1) for t in tags if ":" in t)
        if args.kind and meta.get("kind") != args.kind or args.node and meta.get("node") != args.node:
            continue
        try:
            fleet.actor(name).call("ping")
            live = "live"
        except Exception:  # any failure to answer means "dead" in a listing
            live = "dead"
        rows.append((name, meta.get("kind", "?"), live))
    width = max((len(r[0]) for r in rows), default=10)
    for name, kind, live in rows:
        print(f"{name:<{width}}  {kind:<10}  {live}")
    return 0


def cmd_shell(args: argparse.Namespace) -> int:
    import code
    import rlcompleter  # noqa: F401  (enables tab completion)

    from actors.client import connect

    fleet = connect(*args.ns)
    banner = (f"Harvester shell — `fleet` is connected to {args.ns[0]}:{args.ns[1]}\n"
              f"nodes: {', '.join(fleet.nodes()) or '(none yet)'}\n"
              'try: fleet["pi4"]["dht22"].read()   fleet["pi4"]["leds"].help()')
    try:
        import readline

        readline.parse_and_bind("tab: complete")
    except ImportError:
        pass
    code.interact(banner=banner, local={"fleet": fleet, "connect": connect})
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    p = argparse.ArgumentParser(prog="harvester", description="Harvester sensor fleet")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("node", help="run a node agent from its config")
    s.add_argument("--config", required=True)
    s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable)")
    s.add_argument("--hal", choices=["mock", "real"], help="HAL mode (beats $HARVESTER_HAL and the config)")
    s.set_defaults(func=cmd_node)

    s = sub.add_parser("nameserver", help="run the Pyro5 name server alone")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=9090)
    s.add_argument("--storage", help="SQLite file to keep registrations across restarts")
    s.add_argument("--allow-insecure-lan", action="store_true")
    s.add_argument("--ca", help="CA certificate (mutual TLS; with --cert and --key)")
    s.add_argument("--cert", help="this name server's node certificate")
    s.add_argument("--key", help="its private key")
    s.set_defaults(func=cmd_nameserver)

    s = sub.add_parser("demo", help="run hub, pi4 and pizero in mock mode on 127.0.0.1")
    s.add_argument("--port", type=int, default=8080, help="dashboard port")
    s.add_argument("--ns-port", type=int, default=9090, help="name server port")
    s.add_argument("--state-dir", default=".state/demo")
    s.add_argument("--tls", action="store_true", help="mutual TLS between nodes (CA and certs in <state-dir>/pki)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("certs", help="private CA: node and user certificates for mutual TLS")
    csub = s.add_subparsers(dest="certs_command", required=True)
    for name, what in (("init", "create the CA, then node and user certificates"),
                       ("add-node", "issue node certificates from an existing CA"),
                       ("add-user", "issue user (REPL) certificates from an existing CA")):
        c = csub.add_parser(name, help=what)
        c.add_argument("--dir", required=True, help="PKI directory (holds the CA key: keep it off the nodes)")
        c.add_argument("--node", action="append", default=[], metavar="NAME=IP[,IP|DNS...]")
        c.add_argument("--user", action="append", default=[], metavar="NAME")
        c.add_argument("--force", action="store_true", help="replace existing keys")
        if name == "add-node":
            c.add_argument("nodes", nargs="*", metavar="NAME=IP[,IP|DNS...]")
        elif name == "add-user":
            c.add_argument("users", nargs="*", metavar="NAME")
        c.set_defaults(func=cmd_certs)

    s = sub.add_parser("config", help="node config tools")
    csub = s.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate config files and print every problem")
    c.add_argument("files", nargs="+")
    c.set_defaults(func=cmd_config_check)

    ns_help = "name server HOST:PORT (default 127.0.0.1:9090)"
    s = sub.add_parser("call", help="call an actor method and print the result as JSON")
    s.add_argument("name", help="e.g. harvester.pi4.dht22")
    s.add_argument("method")
    s.add_argument("args", nargs="*", help="arguments (JSON or Python literals)")
    s.add_argument("--ns", type=_endpoint, default=("127.0.0.1", 9090), help=ns_help)
    s.set_defaults(func=cmd_call)

    s = sub.add_parser("ls", help="list the fleet's actors with live/dead status")
    s.add_argument("--kind")
    s.add_argument("--node")
    s.add_argument("--ns", type=_endpoint, default=("127.0.0.1", 9090), help=ns_help)
    s.set_defaults(func=cmd_ls)

    s = sub.add_parser("token", help="print a node's HTTP push token (created if new), or the operator token")
    s.add_argument("node", nargs="?", default="")
    s.add_argument("--operator", action="store_true", help="print the operator token instead")
    s.add_argument("--file", required=True, help="the hub's tokens.json")
    s.set_defaults(func=cmd_token)

    s = sub.add_parser("jobs", help="scheduled jobs: list them or run one now")
    jsub = s.add_subparsers(dest="jobs_command", required=True)
    j = jsub.add_parser("ls", help="next run, last run, last result or error, duration")
    j.add_argument("--node")
    j.add_argument("--ns", type=_endpoint, default=("127.0.0.1", 9090), help=ns_help)
    j.set_defaults(func=cmd_jobs)
    j = jsub.add_parser("run", help="run a job now")
    j.add_argument("name")
    j.add_argument("--node", required=True)
    j.add_argument("--ns", type=_endpoint, default=("127.0.0.1", 9090), help=ns_help)
    j.set_defaults(func=cmd_jobs)

    s = sub.add_parser("shell", help="Python REPL with `fleet` connected")
    s.add_argument("--ns", type=_endpoint, default=("127.0.0.1", 9090), help=ns_help)
    s.set_defaults(func=cmd_shell)

    add_health_parser(sub, _endpoint)
    add_plugins_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `harvester` console script."""
    args = build_parser().parse_args(argv)
    from Pyro5 import config as pyro_config
    from Pyro5 import errors as pyro_errors

    try:
        return int(args.func(args) or 0)
    except pyro_errors.CommunicationError as exc:
        hint = ""
        if isinstance(exc, pyro_errors.ConnectionClosedError) and not pyro_config.SSL:
            # A TLS server closes on a plaintext client without a word; say what probably happened.
            hint = ("\n(if the fleet uses TLS, set HARVESTER_TLS_CA, HARVESTER_TLS_CERT and "
                    "HARVESTER_TLS_KEY; see README, Security)")
        print(f"harvester {args.command}: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
