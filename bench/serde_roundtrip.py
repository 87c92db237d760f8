"""How fast does an ArrayRecord go to wire form and back into the user's NumPy arrays?

Compares, in one run, the full round trip of a model through Corolla's wire encoding with one
plain copy of the same arrays into new memory (``arr.tobytes()``). The round trip is what a
deployment does: the sender hashes each large array (its object id) and encodes the message
protobuf and the chunk frames; the frames stream to the receiver, which assembles the objects
(verifying each hash, as the transfer layer does), decodes the message and hands the app its
arrays with ``to_numpy_ndarrays()`` — writable copies independent of the record. Frames are
consumed as they are produced, as on a streaming RPC. The round-tripped arrays are checked
against the input before anything is printed. Prints the median of several repetitions.

    python bench/serde_roundtrip.py [--mb 100] [--arrays 10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

from corolla.common.objects import assemble, encode_chunks
from corolla.proto.v1 import message_pb2
from corolla.records import Array, ArrayRecord, Message, MessageType, RecordDict
from corolla.records.wire import decode_messages, encode_messages

BOUND = 4.0  # the round trip must cost less than this many plain copies


def fresh(record: ArrayRecord) -> ArrayRecord:
    """The same arrays as new `Array` objects over the same bytes: nothing copied, no object
    id cached, so the sender pays for hashing on every repetition."""
    return ArrayRecord(
        {k: Array(dtype=a.dtype, shape=a.shape, data=a.data) for k, a in record.items()}
    )


def roundtrip(record: ArrayRecord, *, verify: bool, user_copy: bool) -> list[np.ndarray]:
    message = Message(RecordDict({"arrays": fresh(record)}), 1, MessageType.TRAIN)
    protos, objects = encode_messages([message])  # sender: hashes the large arrays
    wire_protos = [p.SerializeToString() for p in protos]

    def frames() -> Iterator[bytes]:
        for object_id, data in objects.items():
            yield from encode_chunks(object_id, data)

    received_objects = assemble(frames(), verify=verify)  # receiver: one copy per object
    parsed = [message_pb2.Message.FromString(raw) for raw in wire_protos]
    (received,) = decode_messages(parsed, lambda ids: {i: received_objects[i] for i in ids})
    arrays = received.content.array_records["arrays"]
    if user_copy:
        return arrays.to_numpy_ndarrays()  # what the app calls: its own writable arrays
    return [array.view() for array in arrays.values()]  # internal read-only access


def timed(fns: list[Callable[[], object]], repeat: int) -> list[list[float]]:
    """Seconds of each of ``fns`` per repetition, run in turn within each repetition so that
    a busy machine slows them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return times


def check(ndarrays: list[np.ndarray], out: list[np.ndarray]) -> None:
    """The round trip gave back the input, as writable arrays that are the app's own."""
    if len(out) != len(ndarrays):
        sys.exit(f"round trip returned {len(out)} arrays, expected {len(ndarrays)}")
    for index, (sent, back) in enumerate(zip(ndarrays, out, strict=True)):
        if back.dtype != sent.dtype or not np.array_equal(back, sent):
            sys.exit(f"array {index} differs after the round trip")
        if not back.flags.writeable or np.shares_memory(back, sent):
            sys.exit(f"array {index} is not a writable array of its own")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=100.0, help="total model size in MB")
    parser.add_argument("--arrays", type=int, default=10, help="number of arrays")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    per_array = int(args.mb * 1e6 / args.arrays / 4)
    rng = np.random.default_rng(0)
    ndarrays = [rng.random(per_array, dtype=np.float32) for _ in range(args.arrays)]
    record = ArrayRecord(ndarrays)
    check(ndarrays, roundtrip(record, verify=True, user_copy=True))

    rows = [
        ("wire round trip + to_numpy_ndarrays()", True, True),
        ("  without the receiver's hash check", False, True),
        ("  reading with view() instead (internal)", True, False),
    ]
    fns: list[Callable[[], object]] = [lambda: [a.tobytes() for a in ndarrays]]
    fns += [
        lambda v=verify, u=user_copy: roundtrip(record, verify=v, user_copy=u)
        for _, verify, user_copy in rows
    ]
    baseline, *measured = timed(fns, args.repeat)
    total_mb = sum(a.nbytes for a in ndarrays) / 1e6
    print(f"model: {args.arrays} float32 arrays, {total_mb:.0f} MB; median of {args.repeat}")
    print(f"{'plain copy (tobytes)':44s} {statistics.median(baseline) * 1e3:8.1f} ms  (1.00x)")
    ratios = []
    for (label, _, _), seconds in zip(rows, measured, strict=True):
        # the ratio to the copy timed in the same repetition, then the median of those
        ratio = statistics.median(t / b for t, b in zip(seconds, baseline, strict=True))
        ratios.append(ratio)
        print(f"{label:44s} {statistics.median(seconds) * 1e3:8.1f} ms  ({ratio:.2f}x)")
    verdict = "under" if ratios[0] < BOUND else "OVER"
    print(f"full round trip: {ratios[0]:.2f}x one copy, {verdict} the {BOUND:.0f}x bound")


if __name__ == "__main__":
    main()
