"""How fast does an ArrayRecord go to wire form and back into NumPy arrays?

Compares, in one run, the full round trip of a model through Corolla's wire encoding
(message protobuf + content-addressed object chunks, hashing included) with one plain copy of
the same arrays into new memory (``arr.tobytes()``). Prints the median of several repetitions.

    python bench/serde_roundtrip.py [--mb 100] [--arrays 10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from corolla.common.objects import assemble, encode_chunks
from corolla.proto.v1 import message_pb2
from corolla.records import ArrayRecord, Message, MessageType, RecordDict
from corolla.records.serde import large_arrays, message_from_proto, message_to_proto


def roundtrip(record: ArrayRecord, verify: bool) -> list[np.ndarray]:
    # Arrays are fresh each time (ids not cached), so hashing is paid on every repetition.
    fresh = ArrayRecord({k: v for k, v in record.items()})
    for array in fresh.values():
        array._object_id = None  # benchmark: force the sender to hash every time
    message = Message(RecordDict({"arrays": fresh}), 1, MessageType.TRAIN)
    # Sender: a small message protobuf plus chunk frames of each large array.
    wire_message = message_to_proto(message).SerializeToString()
    frames = [
        frame
        for object_id, array in large_arrays(message.content).items()
        for frame in encode_chunks(object_id, array.data)
    ]
    # Receiver: parse, assemble objects, rebuild the message and read the arrays.
    objects = assemble(frames, verify=verify)
    proto = message_pb2.Message.FromString(wire_message)
    received = message_from_proto(proto, objects)
    arrays = received.content.array_records["arrays"]
    return arrays.to_numpy_ndarrays()


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    out = roundtrip(record, verify=True)
    assert all(np.array_equal(a, b) for a, b in zip(ndarrays, out, strict=True))

    baseline = timed(lambda: [a.tobytes() for a in ndarrays], args.repeat)
    wire = timed(lambda: roundtrip(record, verify=False), args.repeat)
    wire_verified = timed(lambda: roundtrip(record, verify=True), args.repeat)
    total_mb = sum(a.nbytes for a in ndarrays) / 1e6
    print(f"model: {args.arrays} float32 arrays, {total_mb:.0f} MB")
    print(f"plain copy (tobytes):                      {baseline * 1e3:8.1f} ms  (1.00x)")
    print(
        f"wire round trip (sender hashes):           {wire * 1e3:8.1f} ms  ({wire / baseline:.2f}x)"
    )
    print(
        f"wire round trip (+ receiver verifies hash): {wire_verified * 1e3:7.1f} ms  "
        f"({wire_verified / baseline:.2f}x)"
    )


if __name__ == "__main__":
    main()
