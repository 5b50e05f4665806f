"""Hub ingest: readings/s for batched Pyro5 push and HTTP /push, each against a bare
handler on the same server stack, measured in the same run. Loopback only; bounded."""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BATCHES_PER_CALL = 50
READINGS_PER_BATCH = 10
QUANTITIES = [("temperature", "°C", 21.5), ("humidity", "%", 40.0), ("pressure", "hPa", 1013.0),
              ("cpu_load", "%", 12.0), ("memory_used", "MB", 300.0)]


def make_batches(node: str, first_seq: int, n: int = BATCHES_PER_CALL) -> list[dict[str, Any]]:
    now = time.time()
    out = []
    for i in range(n):
        readings = []
        for j in range(READINGS_PER_BATCH):
            q, unit, v = QUANTITIES[j % len(QUANTITIES)]
            readings.append({"node": node, "sensor": f"s{j // len(QUANTITIES)}", "quantity": q, "value": v + i % 7,
                             "unit": unit, "ts": now - 1 + j * 1e-3, "quality": "ok", "reason": None})
        out.append({"node": node, "seq": first_seq + i, "readings": readings})
    return out


def _serve(kind: str, state: str, ready: Any) -> None:
    """Run one server in this (child) process until terminated."""
    from nameserver.pyro import configure, decode_calls_typed

    configure()
    if kind in ("pyro", "pyro-bare"):
        from Pyro5.api import Daemon, expose

        from actors.hub.aggregator import AggregatorActor
        from actors.hub.state import Hub
        from actors.hub.store import Store

        class BareActor:
            @expose
            def push(self, batches: list[dict[str, Any]], sent_at: float | None = None) -> dict[str, Any]:
                return {"acked": [b["seq"] for b in batches], "duplicates": 0, "hello": []}

        from actors.hub.role import tune_gc

        daemon = Daemon(host="127.0.0.1", port=0)
        obj = AggregatorActor("hub", Hub(Store(Path(state) / "hub.sqlite3"))) if kind == "pyro" else BareActor()
        # the collector as a running hub sets it (HubRole does), for both servers: the ratio
        # measures the hub's work, not a difference in collector settings
        tune_gc()
        uri = daemon.register(obj, objectId="agg")
        if isinstance(obj, AggregatorActor):  # as a hub's agent registers it (actors.node.agent)
            for method, call in obj.typed_calls().items():
                decode_calls_typed("agg", method, call)
        ready.put(str(uri))
        daemon.requestLoop()
    else:
        import bottle
        from waitress.server import create_server

        if kind == "http":
            from actors.hub.state import Hub
            from actors.hub.store import Store
            from actors.hub.tokens import Tokens
            from web.app import create_app

            tokens = Tokens(Path(state) / "tokens.json")
            tokens.ensure_node("bench")
            app = create_app(Hub(Store(Path(state) / "hub.sqlite3")), tokens)
            token = tokens.ensure_node("bench")
        else:
            app = bottle.Bottle()
            token = "bare"

            @app.post("/push")
            def push() -> str:
                bottle.request.body.read()
                bottle.response.content_type = "application/json"
                return '{"acked": []}'

        server = create_server(app, host="127.0.0.1", port=0, threads=8)
        ready.put(json.dumps({"port": server.effective_port, "token": token}))
        server.run()


@contextmanager
def _server(kind: str) -> Iterator[str]:
    """One server in a child process on a state dir of its own; yields what it reports when
    ready, and removes the process and the dir (a store of about 100 MB after a run)."""
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    state = tempfile.mkdtemp(prefix=f"bench-{kind}-")
    proc = ctx.Process(target=_serve, args=(kind, state, ready), daemon=True)
    proc.start()
    try:
        yield ready.get(timeout=60)
    finally:
        proc.terminate()
        proc.join(10)
        shutil.rmtree(state, ignore_errors=True)


def run_pyro(kind: str, seconds: float, max_calls: int, serializer: str = "msgpack") -> float:
    from Pyro5.api import Proxy

    from nameserver.pyro import configure

    configure()
    with _server(kind) as uri, Proxy(uri) as agg:
        agg._pyroTimeout = 30
        agg._pyroSerializer = serializer
        seq, readings, t0 = 1, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds and seq < max_calls * BATCHES_PER_CALL:
            answer = agg.push(make_batches("bench", seq), time.time())
            assert len(answer["acked"]) == BATCHES_PER_CALL
            seq += BATCHES_PER_CALL
            readings += BATCHES_PER_CALL * READINGS_PER_BATCH
        return readings / (time.perf_counter() - t0)


def _client(uri: str, node: str, seconds: float, max_calls: int, start: Any, out: Any) -> None:
    """One of several clients (a child process): push its own node's batches for `seconds`."""
    from Pyro5.api import Proxy

    from nameserver.pyro import configure

    configure()
    with Proxy(uri) as agg:
        agg._pyroTimeout = 30
        agg._pyroSerializer = "msgpack"
        agg._pyroBind()
        start.wait(60)
        seq, readings, t0 = 1, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds and seq < max_calls * BATCHES_PER_CALL:
            answer = agg.push(make_batches(node, seq), time.time())
            assert len(answer["acked"]) == BATCHES_PER_CALL
            seq += BATCHES_PER_CALL
            readings += BATCHES_PER_CALL * READINGS_PER_BATCH
        out.put(readings / (time.perf_counter() - t0))


def run_pyro_clients(kind: str, clients: int, seconds: float, max_calls: int) -> float:
    """Readings/s of `clients` processes pushing at once, each as a node of its own (summed)."""
    ctx = mp.get_context("spawn")
    with _server(kind) as uri:
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_client, args=(uri, f"bench{i}", seconds, max_calls, start, out), daemon=True)
                 for i in range(clients)]
        for proc in procs:
            proc.start()
        start.set()
        try:
            return sum(out.get(timeout=seconds + 120) for _ in procs)
        finally:
            for proc in procs:
                proc.join(10)
                if proc.is_alive():
                    proc.terminate()


def run_http(kind: str, seconds: float, max_calls: int) -> float:
    with _server(kind) as ready:
        info = json.loads(ready)
        conn = http.client.HTTPConnection("127.0.0.1", info["port"], timeout=30)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {info['token']}"}
        seq, readings, t0 = 1, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds and seq < max_calls * BATCHES_PER_CALL:
            body = json.dumps(make_batches("bench", seq))
            conn.request("POST", "/push", body=body, headers=headers)
            res = conn.getresponse()
            res.read()
            assert res.status == 200, res.status
            seq += BATCHES_PER_CALL
            readings += BATCHES_PER_CALL * READINGS_PER_BATCH
        conn.close()
        return readings / (time.perf_counter() - t0)


def log_pages(pushes: int = 100) -> dict[str, Any]:
    """What a push's commit writes to the store's write-ahead log: pages and stored log bytes per
    push, for a drained backlog (BATCHES_PER_CALL batches) and a node keeping up (one batch), with
    the log row compressed as the hub stores it and, as the baseline in the same run, packed only.

    Exact rather than timed: the log is not checkpointed meanwhile (so it only grows, by whole
    frames) and the indexer is woken only at the end (so no push prunes moved rows)."""
    from actors.hub import indexer
    from actors.hub.state import Hub
    from actors.hub.store import Store

    out: dict[str, Any] = {}
    compress_from = indexer.COMPRESS_FROM
    wake = indexer.IndexerProcess.wake
    indexer.IndexerProcess.wake = (  # type: ignore[method-assign]
        lambda self, now=False, upto=0: wake(self, now, upto) if now else None)  # only store.close() wakes it
    try:
        for label, per_push in (("backlog", BATCHES_PER_CALL), ("keeping_up", 1)):
            for form, threshold in (("compressed", compress_from), ("packed", 1 << 62)):
                indexer.COMPRESS_FROM = threshold
                state = Path(tempfile.mkdtemp(prefix="bench-log-"))
                try:
                    store = Store(state / "hub.sqlite3")
                    hub = Hub(store)
                    hub.push(make_batches("bench", 1, per_push), time.time())  # series and node rows
                    store._db.execute("PRAGMA wal_autocheckpoint = 0")
                    (page,) = store._db.execute("PRAGMA page_size").fetchone()
                    wal = state / "hub.sqlite3-wal"
                    before = wal.stat().st_size
                    for i in range(pushes):
                        hub.push(make_batches("bench", 1 + (i + 1) * per_push, per_push), time.time())
                    frames = (wal.stat().st_size - before) / (page + 24)  # each frame: a 24-byte header and a page
                    (stored,) = store._db.execute("SELECT AVG(LENGTH(batches)) FROM ingest_log WHERE id > 1").fetchone()
                    store.close()
                finally:
                    shutil.rmtree(state, ignore_errors=True)
                out[f"log_{label}_{form}_pages_per_push"] = round(frames / pushes, 2)
                out[f"log_{label}_{form}_bytes_per_push"] = round(stored)
    finally:
        indexer.COMPRESS_FROM = compress_from
        indexer.IndexerProcess.wake = wake  # type: ignore[method-assign]
    return out


def _rounds(run: Any, transport: str, args: argparse.Namespace) -> tuple[float, float, list[float]]:
    """`args.rounds` measurements of the hub and of the bare server over `transport`, in turns,
    the order swapped each round: the median round's two rates, and every round's ratio, sorted."""
    rounds = []
    for i in range(max(1, args.rounds)):
        order = (transport, f"{transport}-bare") if i % 2 == 0 else (f"{transport}-bare", transport)
        rates = {kind: run(kind, args.seconds, args.max_calls) for kind in order}
        rounds.append((rates[transport], rates[f"{transport}-bare"]))
    ours, bare = sorted(rounds, key=lambda r: r[0] / r[1])[len(rounds) // 2]
    return ours, bare, sorted(o / b for o, b in rounds)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure and print the four rates and the two ratios; return them."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    p.add_argument("--max-calls", type=int, default=20_000, help="upper bound of calls per measurement")
    p.add_argument("--serpent", action="store_true", help="also measure with Pyro5's default serializer")
    p.add_argument("--clients", type=int, default=0,
                   help="also measure this many clients pushing at once (where pushes share a commit)")
    p.add_argument("--rounds", type=int, default=3,
                   help="measurements of each server, taken in turns (the ratio is their median)")
    args = p.parse_args(argv)
    # A shared machine's speed drifts by a third within a minute: one measurement of each server
    # gave ratios from 0.35 to 0.50 in three runs. Rounds in turns, the order swapped each round,
    # and the median of the rounds' ratios make the figure repeatable; the range is printed.
    result: dict[str, Any] = {}
    for transport, run in (("pyro", run_pyro), ("http", run_http)):
        ours, bare, ratios = _rounds(run, transport, args)
        result.update({f"ingest_{transport}_readings_per_s": round(ours),
                       f"ingest_{transport}_bare_readings_per_s": round(bare),
                       f"ingest_{transport}_ratio": round(ours / bare, 3),
                       f"ingest_{transport}_ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)]})
    result["ingest_rounds"] = max(1, args.rounds)
    print(f"hub ingest, {BATCHES_PER_CALL} batches x {READINGS_PER_BATCH} readings per call, one client, loopback")
    print(f"{'transport':<10} {'readings/s':>12} {'bare/s':>12} {'ratio':>7}")
    for transport, label in (("pyro", "pyro5"), ("http", "http")):
        low, high = result[f"ingest_{transport}_ratio_range"]
        print(f"{label:<10} {result[f'ingest_{transport}_readings_per_s']:>12,} "
              f"{result[f'ingest_{transport}_bare_readings_per_s']:>12,} {result[f'ingest_{transport}_ratio']:>7.2f}"
              f"   (median of {result['ingest_rounds']} rounds; {low:.2f}-{high:.2f})")
    log = log_pages()
    result.update(log)
    print("\nthe store's write-ahead log per push (its log row compressed; packed only as the baseline)")
    print(f"{'push':<22} {'pages':>6} {'baseline':>9} {'log bytes':>10} {'baseline':>9}")
    for label, name in (("backlog", f"{BATCHES_PER_CALL} batches x {READINGS_PER_BATCH}"),
                        ("keeping_up", f"1 batch x {READINGS_PER_BATCH}")):
        print(f"{name:<22} {log[f'log_{label}_compressed_pages_per_push']:>6.2f} "
              f"{log[f'log_{label}_packed_pages_per_push']:>9.2f} {log[f'log_{label}_compressed_bytes_per_push']:>10,} "
              f"{log[f'log_{label}_packed_bytes_per_push']:>9,}")
    if args.clients > 1:
        ours = run_pyro_clients("pyro", args.clients, args.seconds, args.max_calls)
        bare = run_pyro_clients("pyro-bare", args.clients, args.seconds, args.max_calls)
        result.update({"ingest_pyro_clients": args.clients, "ingest_pyro_clients_readings_per_s": round(ours),
                       "ingest_pyro_clients_bare_readings_per_s": round(bare),
                       "ingest_pyro_clients_ratio": round(ours / bare, 3)})
        label = f"pyro5 x{args.clients}"
        print(f"{label:<10} {round(ours):>12,} {round(bare):>12,} {ours / bare:>7.2f}")
    if args.serpent:
        ours = run_pyro("pyro", args.seconds, args.max_calls, "serpent")
        bare = run_pyro("pyro-bare", args.seconds, args.max_calls, "serpent")
        result.update({"ingest_pyro_serpent_readings_per_s": round(ours),
                       "ingest_pyro_serpent_bare_readings_per_s": round(bare),
                       "ingest_pyro_serpent_ratio": round(ours / bare, 3)})
        print(f"{'pyro5/serpent':<10} {round(ours):>12,} {round(bare):>12,} {ours / bare:>7.2f}")
    return result


if __name__ == "__main__":
    main()
