"""Members with valid credentials attack real daemons in a LAN in a box (issue 12, items 6-8).

Two daemons (host 0, the victim; host 1, an honest node Y) join one swarm by token. A
liar on host 2 holds a certificate from the same token (a real member) and sends signed,
well-formed datagrams that lie:

- ``incarnation_overflow``: "Y is dead at incarnation 2**53" to the victim and to Y
  (before: Y's refutation 2**53 + 1 was unencodable, so Y stayed dead everywhere);
- ``address_hijack``: "Y is alive at a higher incarnation, at the liar's address"
  (before: an unsigned alive rumour moved Y's address);
- ``table_filling``: 65 x 64 invented node ids in SYNC rows, unsigned and signed with keys
  the liar made (before: 4,096 rows filled the table; a real node joining later was refused);
  then a real node joins on host 2 and must be seen alive.

Poisoned weights and inflated ages (items 8 and 9) are measured in-process by
``benchmarks/gossip_learning.py --poison signflip|x100|age|signflip-age`` (the same
``ConvnetLearner.absorb`` the daemon runs; docs/SECURITY.md has the figures).

Each attack prints what was sent, what the victim counted and whether the promise held;
``--json`` ends with ``{"attacks": {name: {"held": bool, ...}}}``. Needs root (network
namespaces, tests/lanbox.py).

    python benchmarks/attacks_members.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.daemon_box import (UDP_PORT, new_swarm_token, peer_states,  # noqa: E402
                              start_daemon, statuses, wait_until)
from tests.lanbox import LanBox, lanbox_available  # noqa: E402

# Daemons that train a little and then only serve: the attacks are about membership.
QUIET = ["--net", "tiny", "--train-chunk", "2", "--max-steps", "4", "--gossip-interval", "1",
         "--eval-interval", "60", "--checkpoint-interval", "60", "--no-mdns"]

# The liar: a member with a certificate minted from the swarm token, speaking raw datagrams.
LIAR = r"""
import json, socket, sys, time
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gossipnet.membership import codec
from gossipnet.membership.codec import MAX_INCARNATION, Update, encode_entry, encode_update
from gossipnet.membership.records import RecordSigner
from gossipnet.membership.types import State
from gossipnet.trust.credentials import load_credentials
from gossipnet.trust.identity import Identity
from gossipnet.wire.envelope import Sealer
from gossipnet.wire.types import MsgType

attack, token, me, victims, y_id, y_inc = sys.argv[1:7]
victims = [((h, int(p)), nid) for h, p, nid in (v.split(":") for v in victims.split(","))]
y_inc = int(y_inc)
ident = Identity.generate()
now_ms = lambda: int(time.time() * 1000)
sealer = Sealer(ident, load_credentials(ident, now_ms(), swarm_token=token), incarnation=now_ms())
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((me, 0))
sent = {"datagrams": 0, "rows": 0}

def send(msg_type, body, to):
    addr, node_id = to  # envelopes name their recipient (wire v2): a lie must reach membership to be tested
    sock.sendto(sealer.seal(msg_type, body, now_ms(), to=node_id), addr)
    sent["datagrams"] += 1
    time.sleep(0.002)  # paced: what the victim's per-source budget lets through is not the question

if attack == "incarnation_overflow":
    kill = encode_update(Update(State.DEAD, y_id, MAX_INCARNATION, origin=ident.node_id))
    for _ in range(5):
        for v in victims:
            send(MsgType.GOSSIP, {"u": [kill]}, v)
    sent["claim"] = f"{y_id} dead at incarnation 2**53"
elif attack == "address_hijack":
    lie = encode_update(Update(State.ALIVE, y_id, y_inc + 5, (me, 7946), {"http": 8080}))
    for _ in range(5):
        send(MsgType.GOSSIP, {"u": [lie]}, victims[0])
    sent["claim"] = f"{y_id} alive at incarnation {y_inc + 5}, at {me}:7946 (unsigned)"
elif attack == "table_filling":
    rows = [encode_entry(f"fake{d:02d}x{i:02d}", 1, State.ALIVE, (f"10.9.{d}.{i + 1}", 7946), {})
            for d in range(65) for i in range(64)]
    for d in range(8):  # and some the liar signed with keys it made (ids that hash right)
        for i in range(64):
            key = Ed25519PrivateKey.generate()
            signer = RecordSigner(key)
            u = signer.sign(Update(State.ALIVE, signer.node_id, 1, (f"10.8.{d}.{i + 1}", 7946), {}))
            rows.append(encode_entry(u.node_id, 1, State.ALIVE, u.addr, {}, (u.pubkey, u.sig)))
    for body in codec.chunk_rows(rows, sealer.max_body - 16, reply_flag=False):
        send(MsgType.SYNC_REPLY, body, victims[0])
        sent["rows"] += len(body["m"])
    sent["claim"] = f"{sent['rows']} invented members ({65 * 64} unsigned, {8 * 64} signed by made-up keys)"
print(json.dumps(sent))
"""


def _status(lan: LanBox, host: int) -> dict[str, Any]:
    return statuses(lan, host, [host])[host]


def _membership(status: dict[str, Any]) -> dict[str, int]:
    return status.get("counters", {}).get("membership", {})


def _liar(lan: LanBox, attack: str, token: str, victims: list[int], y_id: str, y_inc: int) -> dict[str, Any]:
    ids = statuses(lan, victims[0], victims)
    to = ",".join(f"{lan.address(h)}:{UDP_PORT}:{ids[h]['node']['id']}" for h in victims)
    code = f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + LIAR  # this checkout's gossipnet
    done = lan.run(2, [sys.executable, "-c", code, attack, token, lan.address(2), to, y_id, str(y_inc)],
                   timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _y_row(status: dict[str, Any], y_id: str) -> dict[str, Any] | None:
    return next((p for p in status.get("peers", []) if p["node_id"] == y_id), None)


def incarnation_overflow(lan: LanBox, token: str, ids: dict[int, str]) -> dict[str, Any]:
    y_id = ids[1]
    y_inc = _y_row(_status(lan, 0), y_id)["incarnation"]
    sent = _liar(lan, "incarnation_overflow", token, [0, 1], y_id, y_inc)
    time.sleep(3)  # several probe rounds: a dead Y would stay dead now
    got = statuses(lan, 0, [0, 1])
    row = _y_row(got[0], y_id)
    counted = _membership(got[0]).get("rejected.future_incarnation", 0)
    y_counted = _membership(got[1]).get("rejected.future_incarnation", 0)
    held = (row is not None and row["state"] == "alive" and row["incarnation"] < 2**53
            and got[1]["node"]["incarnation"] < 2**53 and counted > 0)
    return {"held": held, "sent": sent, "victim_sees_y": row, "victim_counted": counted,
            "y_counted": y_counted, "y_incarnation": got[1]["node"]["incarnation"]}


def address_hijack(lan: LanBox, token: str, ids: dict[int, str]) -> dict[str, Any]:
    y_id = ids[1]
    before = _y_row(_status(lan, 0), y_id)
    sent = _liar(lan, "address_hijack", token, [0], y_id, before["incarnation"])
    time.sleep(2)
    got = _status(lan, 0)
    row = _y_row(got, y_id)
    counted = _membership(got).get("rejected.unsigned_record", 0)
    held = (row is not None and row["address"] == before["address"]
            and row["address"] != f"{lan.address(2)}:7946" and counted > 0)
    return {"held": held, "sent": sent, "y_before": before["address"], "y_after": row and row["address"],
            "victim_counted": counted}


def table_filling(lan: LanBox, token: str, ids: dict[int, str], state: Path) -> dict[str, Any]:
    sent = _liar(lan, "table_filling", token, [0], ids[1], 0)
    time.sleep(2)
    got = _status(lan, 0)
    m = _membership(got)
    invented = [p["node_id"] for p in got["peers"] if p["node_id"] not in ids.values()]
    late = start_daemon(lan, 2, state / "late", token, *QUIET, "--peer", f"{lan.address(1)}:{UDP_PORT}")

    def late_seen():
        me = _status(lan, 2).get("node", {}).get("id")
        alive = {p["node_id"] for p in _status(lan, 0).get("peers", []) if p["state"] == "alive"}
        return me if me in alive else None

    try:
        seen, secs = wait_until("the late real node to be alive at the victim", late_seen, timeout=60)
    except AssertionError:
        seen, secs = None, None
    finally:
        late.kill()
    final = _status(lan, 0)
    rows = len(final["peers"])
    held = bool(seen) and not invented and rows <= 3
    return {"held": held, "sent": sent, "victim_rows_after_attack": len(got["peers"]),
            "invented_rows": len(invented), "victim_counted": {k: m.get(k, 0) for k in (
                "rejected.unsigned_record", "rejected.intro_quota", "intros", "intros_expired")},
            "late_node_alive_after_s": secs and round(secs, 1)}


ATTACKS = ("incarnation_overflow", "address_hijack", "table_filling")


def run(attacks: tuple[str, ...] = ATTACKS, log=print) -> dict[str, dict[str, Any]]:
    """Every attack against one fresh two-daemon swarm; {name: result}."""
    token = new_swarm_token()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gn-attacks-") as tmp, LanBox(hosts=3) as lan:
        state = Path(tmp)
        nodes = [start_daemon(lan, i, state / f"n{i}", token, *QUIET,
                              *(["--peer", f"{lan.address(0)}:{UDP_PORT}"] if i else []))
                 for i in range(2)]
        try:
            def joined():
                got = statuses(lan, 0, [0, 1])
                if not all("node" in s for s in got.values()):
                    return None
                ids = {h: s["node"]["id"] for h, s in got.items()}
                ok = (peer_states(got[0]).get(ids[1]) == "alive" and peer_states(got[1]).get(ids[0]) == "alive")
                return ids if ok else None

            ids, _ = wait_until("the two daemons to see each other", joined, timeout=90)
            for name in attacks:
                if name == "table_filling":
                    r = table_filling(lan, token, ids, state)
                else:
                    r = globals()[name](lan, token, ids)
                results[name] = r
                log(f"{name}: sent {r['sent'].get('claim')} ({r['sent']['datagrams']} datagrams); "
                    f"victim counted {r['victim_counted']}; promise {'HELD' if r['held'] else 'BROKEN'}")
                log(f"  {json.dumps({k: v for k, v in r.items() if k not in ('sent', 'held')})}")
        finally:
            for n in nodes:
                n.kill()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attack", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    p.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = p.parse_args(argv)
    ok, reason = lanbox_available()
    if not ok:
        print(f"cannot build a LAN in a box here: {reason}", file=sys.stderr)
        return 2
    results = run(tuple(args.attack))
    if args.json:
        print(json.dumps({"attacks": results}))
    return 0 if all(r["held"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
