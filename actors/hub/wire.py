"""A push's batches decoded from the call's msgpack bytes straight into typed structures.

Pyro5 decodes a call into dicts and lists: for a drained backlog (50 batches of 10 readings)
that alone costs about as much as all of the hub's checks after it, and the checks then take
every reading apart again. msgspec decodes the same bytes into these structures, checking each
field's type on the way, in a fraction of that time (bench/bench_ingest.py measures both).
Nothing changes on the wire: nameserver.pyro's serializer hands a registered call's arguments
to decode_push and everything else, or anything decode_push refuses, to Pyro5's own decoder.

What decode_push accepts still goes through the hub's checks (actors.hub.ingest.check_push): a
field left out stays left out (UNSET), so a push that the column checks do not take is turned
back into exactly the dicts Pyro5 would have made, and checked and refused the same way.

Imported by a hub only: msgspec is not installed on a Pi Zero (no armv6 wheel), whose agent
then never loads this module."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from actors.hub.ingest import TypedBatches


class WireReading(msgspec.Struct, forbid_unknown_fields=True):
    """A reading as a spoke sends it; the three defaulted fields remember whether they were sent."""

    sensor: str
    quantity: str
    value: int | float | None
    unit: str
    ts: int | float
    node: str | UnsetType = UNSET
    quality: str | UnsetType = UNSET
    reason: str | None | UnsetType = UNSET


class WireBatch(msgspec.Struct, forbid_unknown_fields=True):
    """A batch as a spoke sends it."""

    node: str
    seq: int
    readings: list[WireReading]
    alerts: list[Any] | None | UnsetType = UNSET


_PUSH_ARGS = msgspec.msgpack.Decoder(tuple[list[WireBatch], Any])
# A push of a few batches (a node keeping up sends one, about 1 kB) is checked batch by batch
# as dicts anyway: decoded typed and turned back into dicts it cost 23 us against 20 us. Five
# batches of ten readings, where the column checks start, pack to about 4.7 kB.
TYPED_FROM_BYTES = 4096
# decode_push's refusals, after which the caller decodes the call the stock way. msgspec stops at
# a shallower nesting than msgpack (RecursionError at 1000 levels, where msgpack goes to 1024)
REFUSED = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)


def _as_dicts(batches: list[WireBatch]) -> list[Any]:
    return msgspec.to_builtins(batches)  # UNSET fields are left out, as they were on the wire


def decode_push(vargs: bytes | memoryview) -> tuple[TypedBatches, Any]:
    """push(batches, sent_at)'s positional arguments from their msgpack bytes; raises one of
    REFUSED for anything else (a single batch, a missing sent_at, a field of another type)."""
    batches, sent_at = _PUSH_ARGS.decode(vargs)
    return TypedBatches(batches, _as_dicts, UNSET), sent_at
