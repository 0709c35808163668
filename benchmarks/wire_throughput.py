"""Wire-layer cost per datagram vs bare Ed25519, and blob codec throughput.

    python benchmarks/wire_throughput.py [--repeats 7] [--n 2000] [--json]

Datagrams: the same 1,170-byte payload either signed/verified bare (cryptography's
Ed25519) or sealed/opened as a full envelope (msgpack body, header, certificate,
every receiver check). Side by side in one run, medians over repeats; the ratio is
what the wire layer adds (target: <= 1.20). Blobs: encode and check+decode MB/s for
1 MB and 10 MB float32 models, sent as float32 or float16, raw or zlib.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's gossipnet

from gossipnet.trust.credentials import load_credentials  # noqa: E402
from gossipnet.trust.identity import Identity  # noqa: E402
from gossipnet.trust.swarm import Swarm  # noqa: E402
from gossipnet.wire import Accepted, MsgType, Receiver, ReceiverConfig, Sealer  # noqa: E402
from gossipnet.exchange import Download, Gate, publish  # noqa: E402
from gossipnet.learners.base import LearnerWire, Snapshot  # noqa: E402
from gossipnet.wire.blobs import spec_of  # noqa: E402

PAYLOAD = 1170  # + 6 bytes of msgpack framing = a 1,176-byte body, just under MAX_UDP_BODY (1,182)


def per_op_us(fn, n: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean time per call of ``fn(i)`` for i in range(n)."""
    times = []
    for _ in range(repeats):
        state = fn(None)  # per-repeat setup, untimed
        t0 = time.perf_counter()
        for i in range(n):
            state(i)
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


def bench_datagrams(n: int, repeats: int) -> dict[str, float]:
    payload = os.urandom(PAYLOAD)
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes_raw()
    sig = key.sign(payload)

    def bare_sign(_):
        return lambda i: key.sign(payload)

    def bare_verify(_):
        return lambda i: Ed25519PublicKey.from_public_bytes(pub).verify(sig, payload)

    now = 1_800_000_000_000
    swarm = Swarm(Ed25519PrivateKey.generate(), "bench")
    ident = Identity.generate()
    creds = load_credentials(ident, now, swarm_token=swarm.token)
    body = {"p": payload}

    receiver_id = Identity.generate()

    def seal(_):
        sealer = Sealer(ident, creds, 1)
        return lambda i: sealer.seal(MsgType.PING, body, now, to=receiver_id.node_id)

    config = ReceiverConfig(rate_per_s=1e9, burst=1e9)  # measure the checks, not the limiter
    sealer = Sealer(ident, creds, 2)
    datagrams = [sealer.seal(MsgType.PING, body, now, to=receiver_id.node_id) for _ in range(n)]
    assert len(datagrams[0]) <= 1400
    # Warm the certificate cache once, as a long-running receiver would have it.
    policy = load_credentials(receiver_id, now, swarm_token=swarm.token).policy
    Receiver(policy, config, node_id=receiver_id.node_id).open(datagrams[0], ("10.0.0.1", 1), now)

    def open_(_):
        receiver = Receiver(policy, config, node_id=receiver_id.node_id)

        def step(i):
            result = receiver.open(datagrams[i], ("10.0.0.1", 1), now)
            if not isinstance(result, Accepted):
                raise AssertionError(result)
        return step

    out = {
        "bare_sign_us": per_op_us(bare_sign, n, repeats),
        "seal_us": per_op_us(seal, n, repeats),
        "bare_verify_us": per_op_us(bare_verify, n, repeats),
        "open_us": per_op_us(open_, n, repeats),
        "datagram_bytes": len(datagrams[0]),
    }
    out["seal_ratio"] = out["seal_us"] / out["bare_sign_us"]
    out["open_ratio"] = out["open_us"] / out["bare_verify_us"]
    out["roundtrip_ratio"] = (out["seal_us"] + out["open_us"]) / (out["bare_sign_us"] + out["bare_verify_us"])
    return out


def bench_blobs(repeats: int) -> list[dict]:
    """Encode (``exchange.publish``) and check + decode (``Download.whole`` then
    ``Gate.open``) a model of 1 and 10 MB: the daemon's exchange path, both ends."""
    rows = []
    rng = np.random.default_rng(0)
    for mb in (1, 10):
        n = mb * 1_000_000 // 4
        model = {"conv.w": rng.standard_normal(n // 2, dtype=np.float32).reshape(-1, 10),
                 "fc.w": rng.standard_normal(n - n // 2, dtype=np.float32) * 0.01}
        raw_mb = sum(a.nbytes for a in model.values()) / 1e6
        snapshot = Snapshot("weights", "bench", 1.0, model)
        gate = Gate("weights", spec_of(model))
        for dtype in ("float32", "float16"):
            wire = LearnerWire(blob_kind="weights", dtype=dtype, default_chunk=1, merge_event="merge")
            for compress in (False, True):
                enc, dec, size = [], [], 0
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    offer = publish(snapshot, wire, 1, compress=compress)
                    t1 = time.perf_counter()
                    result = gate.open(Download.whole(offer.manifest, offer.data))
                    t2 = time.perf_counter()
                    assert isinstance(result, Snapshot), result
                    enc.append(t1 - t0)
                    dec.append(t2 - t1)
                    size = len(offer.data)
                rows.append({"model_mb": raw_mb, "dtype": dtype, "codec": "zlib" if compress else "raw",
                             "wire_mb": size / 1e6,
                             "encode_mb_s": raw_mb / statistics.median(enc),
                             "decode_mb_s": raw_mb / statistics.median(dec)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n", type=int, default=2000, help="datagrams per repeat")
    parser.add_argument("--blob-repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print a final line of JSON")
    args = parser.parse_args()

    d = bench_datagrams(args.n, args.repeats)
    print(f"datagram of {d['datagram_bytes']} bytes ({PAYLOAD}-byte payload), median of {args.repeats} x {args.n}:")
    print(f"  {'':10} {'bare Ed25519':>14} {'wire layer':>12} {'ratio':>7}")
    print(f"  {'sign/seal':10} {d['bare_sign_us']:11.1f} us {d['seal_us']:9.1f} us {d['seal_ratio']:7.2f}")
    print(f"  {'verify/open':10} {d['bare_verify_us']:10.1f} us {d['open_us']:9.1f} us {d['open_ratio']:7.2f}")
    print(f"  {'both':10} {'':14} {'':12} {d['roundtrip_ratio']:7.2f}   (target <= 1.20)")
    print(f"  => {1e6 / d['seal_us']:.0f} sealed/s, {1e6 / d['open_us']:.0f} opened/s on one core")

    rows = bench_blobs(args.blob_repeats)
    print(f"blobs, median of {args.blob_repeats} (MB/s of float32 model):")
    print(f"  {'model':>6} {'sent as':>8} {'codec':>5} {'wire MB':>8} {'encode':>8} {'decode':>8}")
    for r in rows:
        print(f"  {r['model_mb']:5.1f}M {r['dtype']:>8} {r['codec']:>5} {r['wire_mb']:8.2f} "
              f"{r['encode_mb_s']:8.0f} {r['decode_mb_s']:8.0f}")
    if args.json:
        print(json.dumps({"datagram": d, "blobs": rows}))


if __name__ == "__main__":
    main()
