"""The `harvester` commands that talk to a running fleet: call, notify, jobs, token, ls, shell.

Imported when one of them runs (actors.cli.main dispatches to it), never by `harvester node`."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from actors.cli.main import EXIT_UNREACHABLE, EXIT_USAGE, CliFailure

if TYPE_CHECKING:
    from actors.client import Fleet

T = TypeVar("T")
PARALLEL_CALLS = 16  # nodes asked at once by `ls` and `jobs`: a frozen one costs one timeout, not one each


def _arg(text: str) -> Any:
    """A call argument: JSON or a Python literal if it parses, else the plain string."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    return text


def _node_of(name: str) -> str | None:
    """The node of `harvester.<node>.<actor>`, else None."""
    from hal.names import PREFIX

    parts = name.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == PREFIX else None


def unreachable(fleet: Fleet, exc: Exception, name: str | None = None, method: str | None = None) -> CliFailure:
    """The one message for a name server or node that did not answer: who, within how long, what to check."""
    from Pyro5 import config as pyro_config
    from Pyro5 import errors as pyro_errors

    ns = f"{fleet.host}:{fleet.port}"
    node = _node_of(name) if name else None
    if isinstance(exc, pyro_errors.NamingError) and "unknown name" in str(exc):
        return CliFailure(f"no actor {name!r} in the name server at {ns} (`harvester ls` lists them)",
                          EXIT_UNREACHABLE)
    # a PYRONAME call that found no name server raises NamingError from the transport's error
    at_ns = name is None or isinstance(exc, pyro_errors.NamingError)
    cause = exc.__cause__ if at_ns and isinstance(exc.__cause__, pyro_errors.CommunicationError) else exc
    timed_out = isinstance(cause, pyro_errors.TimeoutError)
    within = f"within {fleet.timeout:g} s (the call timeout; see --timeout)"
    if at_ns:
        what = f"the name server at {ns} did not answer {within}" if timed_out else \
            f"cannot reach the name server at {ns}: {type(cause).__name__}: {cause}"
        check = f"Check that the hub (or `harvester nameserver`) is running at {ns} and the network to {fleet.host}."
    else:
        what = f"node {node} did not answer: {name}.{method}() got no reply {within}" if timed_out else \
            f"cannot reach {name}{f' on node {node}' if node else ''}: {type(exc).__name__}: {exc}"
        check = (f"Check that {node}'s node process is running and not stopped "
                 f"(`harvester health --node {node} --ns {ns}`) and the network between here and {node}."
                 if node else "Check that its node process is running and the network to it.")
    closed = isinstance(cause, pyro_errors.ConnectionClosedError)
    if (closed or at_ns and timed_out) and not pyro_config.SSL:
        # A TLS server closes on a plaintext client, or waits for its handshake, without a word.
        check += ("\n(if the fleet uses TLS, set HARVESTER_TLS_CA, HARVESTER_TLS_CERT and HARVESTER_TLS_KEY; "
                  "see README, Security)")
    return CliFailure(f"{what}.\n{check}", EXIT_UNREACHABLE)


def _is_transport_error(exc: Exception) -> bool:
    from Pyro5 import errors as pyro_errors

    if isinstance(exc, pyro_errors.NamingError):  # raised by the name server, or for want of one
        return True
    # an actor's own error that happens to be a Pyro5 one arrives with the remote traceback attached
    return isinstance(exc, pyro_errors.CommunicationError) and not hasattr(exc, "_pyroTraceback")


def remote_call(fleet: Fleet, name: str, method: str, *args: Any) -> Any:
    """Call `name.method(*args)` for a CLI command; a silent name server or node raises CliFailure (exit 3)."""
    try:
        return fleet.actor(name).call(method, *args)
    except Exception as exc:
        if _is_transport_error(exc):
            raise unreachable(fleet, exc, name, method) from exc
        raise


def ns_call(fleet: Fleet, op: Callable[[], T]) -> T:
    """Run a name-server query for a CLI command; a silent name server raises CliFailure (exit 3)."""
    try:
        return op()
    except Exception as exc:
        if _is_transport_error(exc):
            raise unreachable(fleet, exc) from exc
        raise


def _client(args: argparse.Namespace) -> Fleet:
    from actors.client import connect

    return connect(list(args.ns), timeout=args.timeout)


def cmd_call(args: argparse.Namespace) -> int:
    from actors.client import check_method_name
    from actors.node.jobspec import ACTOR_RE

    # said before any network: a name server that is fine must not be blamed for a typo
    if not ACTOR_RE.match(args.name):
        raise CliFailure(f"{args.name!r} is not an actor name: harvester.<node>.<actor>, e.g. harvester.pi4.dht22 "
                         "(`harvester ls` lists them)", EXIT_USAGE)
    try:
        check_method_name(args.method)
    except AttributeError as exc:
        raise CliFailure(str(exc), EXIT_USAGE) from None
    fleet = _client(args)
    try:
        result = remote_call(fleet, args.name, args.method, *[_arg(a) for a in args.args])
    except CliFailure:
        raise
    except Exception as exc:  # the remote error, typed; show it plainly
        print(f"harvester call: {args.name}.{args.method} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    return 0


def cmd_notify(args: argparse.Namespace) -> int:
    """`harvester notify channels|test [CHANNEL]`: the hub's notification channels."""
    fleet = _client(args)
    names = ns_call(fleet, lambda: fleet.names({"kind:notify"}))
    if not names:
        raise CliFailure(f"no hub at {fleet.where()} has notification channels ([[notify]] in its config)", 1)
    name = sorted(names)[0]  # with several hubs each has the same channels; the leader sends, any may test
    if args.notify_command == "channels":
        print(json.dumps(remote_call(fleet, name, "channels"), indent=2, ensure_ascii=False))
        return 0
    outcomes = remote_call(fleet, name, "test", *([args.channel] if args.channel else []))
    for o in outcomes:
        print(f"{o['channel']}: {'sent' if o['ok'] else 'NOT sent'}: {o['result']}")
    return 0 if all(o["ok"] for o in outcomes) else 1


def _when(ts: float | None) -> str:
    import time as _time

    return "-" if ts is None else _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(ts))


def _jobs_of(fleet: Fleet, nodes: list[str]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, CliFailure]]:
    """Every node's job list, asked in parallel: (node -> jobs, node -> why it could not be asked)."""
    from hal.names import object_name

    def ask(node: str) -> list[dict[str, Any]]:
        try:
            return remote_call(fleet, object_name(node, "jobs"), "list")
        except CliFailure:
            raise
        except Exception as exc:  # the jobs actor's own error
            raise CliFailure(f"{node}: jobs.list() failed: {type(exc).__name__}: {exc}", 1) from exc

    found: dict[str, list[dict[str, Any]]] = {}
    failed: dict[str, CliFailure] = {}
    if not nodes:
        return found, failed
    with ThreadPoolExecutor(max_workers=min(PARALLEL_CALLS, len(nodes))) as pool:
        futures = {node: pool.submit(ask, node) for node in nodes}
    for node, future in futures.items():
        try:
            found[node] = future.result()
        except CliFailure as exc:
            failed[node] = exc
    return found, failed


def _jobs_nodes(fleet: Fleet) -> list[str]:
    """Nodes that register a jobs actor."""
    names = ns_call(fleet, lambda: fleet.names({"kind:jobs"}))
    return sorted({node for n in names if (node := _node_of(n))})


def _job_node(fleet: Fleet, job: str) -> str:
    """The one node that has a job named `job`; CliFailure when none, several, or a node could not be asked."""
    found, failed = _jobs_of(fleet, _jobs_nodes(fleet))
    have = sorted(node for node, jobs in found.items() if any(j["name"] == job for j in jobs))
    if len(have) > 1:
        raise CliFailure(f"job {job!r} is on several nodes: {', '.join(have)}; pick one with --node NODE", 2)
    if failed:  # the silent node may have it too: running it elsewhere could be the wrong job
        where = f"{have[0]} has it, but " if have else ""
        hint = f" --node {have[0]}" if have else " --node NODE"
        reasons = "\n".join(str(f) for f in failed.values())
        raise CliFailure(f"cannot tell which node has job {job!r}: {where}{', '.join(sorted(failed))} could not be "
                         f"asked; name the node with{hint}\n{reasons}", max(f.code for f in failed.values()))
    if not have:
        owners: dict[str, list[str]] = {}
        for node, jobs in found.items():
            for j in jobs:
                owners.setdefault(j["name"], []).append(node)
        known = ", ".join(f"{name} ({', '.join(sorted(nodes))})" for name, nodes in sorted(owners.items()))
        raise CliFailure(f"no node has a job named {job!r}; jobs: {known or 'none'}", 2)
    return have[0]


def cmd_jobs(args: argparse.Namespace) -> int:
    from actors.errors import BadRequest
    from hal.names import object_name

    fleet = _client(args)
    if args.jobs_command == "run":
        node = args.node or _job_node(fleet, args.name)
        try:
            rec = remote_call(fleet, object_name(node, "jobs"), "run", args.name)
        except CliFailure:
            raise
        except BadRequest as exc:  # no such job on that node: the actor lists the ones it has
            print(f"harvester jobs run: {node}: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # the remote error, typed; show it plainly
            print(f"harvester jobs run: {node}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(rec, indent=2, ensure_ascii=False))
        return 1 if rec["last_error"] else 0
    found, failed = _jobs_of(fleet, [args.node] if args.node else _jobs_nodes(fleet))
    rows = []
    for node, jobs in sorted(found.items()):
        for job in jobs:
            outcome = f"error: {job['last_error']}" if job["last_error"] else (job["last_result"] or "-")
            took = f"{job['duration_ms']:.0f} ms" if job["duration_ms"] is not None else "-"
            rows.append((node, job["name"], job["trigger"], _when(job["next_run"]), _when(job["last_run"]), took,
                         outcome if job["enabled"] else "disabled"))
    header = ("NODE", "JOB", "TRIGGER", "NEXT RUN", "LAST RUN", "TOOK", "LAST RESULT")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(6)]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r[:6], widths, strict=True)) + "  " + str(r[6]))
    for failure in failed.values():  # the nodes that answered are listed; say which did not
        print(f"harvester jobs: {failure}", file=sys.stderr)
    return max((f.code for f in failed.values()), default=0)


def cmd_token(args: argparse.Namespace) -> int:
    from actors.hub.tokens import TokenFileError, Tokens

    try:
        tokens = Tokens(Path(args.file))
        print(tokens.data()["operator"] if args.operator else tokens.ensure_node(args.node))
    except (TokenFileError, ValueError, OSError) as exc:
        print(f"harvester token: {exc}", file=sys.stderr)
        return 2
    return 0


def _ping(fleet: Fleet, name: str) -> tuple[str, CliFailure | None]:
    """An actor's state for `ls`: live, dead (refused, gone) or no answer (frozen), with why."""
    from Pyro5 import errors as pyro_errors

    try:
        remote_call(fleet, name, "ping")
        return "live", None
    except CliFailure as exc:
        frozen = isinstance(exc.__cause__, pyro_errors.TimeoutError)
        return (f"no answer ({fleet.timeout:g} s)", exc) if frozen else ("dead", None)
    except Exception:  # any other failure to answer means "dead" in a listing
        return "dead", None


def cmd_ls(args: argparse.Namespace) -> int:
    fleet = _client(args)
    selected = []
    for name, (_uri, tags) in sorted(ns_call(fleet, fleet.listing).items()):
        meta = dict(t.split(":", 1) for t in tags if ":" in t)
        if args.kind and meta.get("kind") != args.kind or args.node and meta.get("node") != args.node:
            continue
        selected.append((name, meta.get("kind", "?")))
    with ThreadPoolExecutor(max_workers=PARALLEL_CALLS) as pool:
        states = list(pool.map(lambda row: _ping(fleet, row[0]), selected))
    width = max((len(name) for name, _kind in selected), default=10)
    silent: dict[str, CliFailure] = {}
    for (name, kind), (state, failure) in zip(selected, states, strict=True):
        print(f"{name:<{width}}  {kind:<10}  {state}")
        if failure is not None:
            silent.setdefault(_node_of(name) or name, failure)
    for failure in silent.values():  # one hint per frozen node, not one per actor
        print(f"harvester ls: {failure}", file=sys.stderr)
    return 0


def enable_completion(namespace: dict[str, Any], readline: Any = None) -> bool:
    """Tab-complete names in `namespace` (node, actor and remote method names through `fleet`); False without readline."""
    import rlcompleter

    if readline is None:
        try:
            import readline
        except ImportError:  # e.g. Windows without pyreadline3
            return False
    # code.interact() runs in `namespace`, not __main__, so the default completer would not see `fleet`
    readline.set_completer(rlcompleter.Completer(namespace).complete)
    # macOS's readline module is libedit, which ignores GNU's "tab: complete"
    libedit = getattr(readline, "backend", None) == "editline" or "libedit" in (readline.__doc__ or "")
    readline.parse_and_bind("bind ^I rl_complete" if libedit else "tab: complete")
    return True


def cmd_shell(args: argparse.Namespace) -> int:
    import code

    from actors.client import connect

    fleet = _client(args)
    nodes = ns_call(fleet, fleet.nodes)
    namespace: dict[str, Any] = {"fleet": fleet, "connect": connect}
    tab = ("Tab completes node, actor and method names: fleet.pi4.dht22.re<Tab>" if enable_completion(namespace)
           else "(no readline module here, so no Tab completion)")
    banner = (f"Harvester shell — `fleet` is connected to {fleet.where}\n"
              f"nodes: {', '.join(nodes) or '(none yet)'}\n"
              f"try: fleet.pi4.dht22.read()   fleet.pi4.leds.help()   list(fleet)\n{tab}")
    code.interact(banner=banner, local=namespace)
    return 0
