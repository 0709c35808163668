"""The UDP endpoint: bounded queue, size limits, counters, and the fault layer on real sockets.

Everything runs on 127.0.0.1 in the test's own process.
"""

import asyncio
import socket
import time

import pytest

from gossipnet.errors import UserError
from gossipnet.net.faults import FaultConfig
from gossipnet.net.udp import (
    MAX_DATAGRAM,
    DropReason,
    UdpClosed,
    UdpConfig,
    UdpEndpoint,
    kernel_drops,
)

LOCAL = ("127.0.0.1", 0)


async def wait_until(predicate, timeout=3.0):
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def drain(endpoint, quiet=0.15):
    """Receive until nothing arrives for ``quiet`` seconds."""
    got = []
    while True:
        try:
            async with asyncio.timeout(quiet):
                got.append(await endpoint.recv())
        except TimeoutError:
            return got


async def test_datagrams_round_trip_and_are_counted():
    async with await UdpEndpoint.bind(LOCAL) as a, await UdpEndpoint.bind(LOCAL) as b:
        await a.send(b"hello", b.local_address)
        async with asyncio.timeout(2):
            data, addr = await b.recv()
        assert data == b"hello"
        assert addr == a.local_address
        assert a.stats().datagrams_out == 1 and a.stats().bytes_out == 5
        assert b.stats().datagrams_in == 1 and b.stats().bytes_in == 5
        assert all(n == 0 for n in b.stats().dropped.values())


async def test_receive_queue_overflow_drops_newest_and_counts():
    config = UdpConfig(queue_size=5)
    async with await UdpEndpoint.bind(LOCAL, config) as rx, await UdpEndpoint.bind(LOCAL) as tx:
        for i in range(20):
            await tx.send(b"%d" % i, rx.local_address)
        await wait_until(lambda: rx.stats().datagrams_in == 20)
        assert rx.queued == 5
        assert rx.stats().dropped[DropReason.QUEUE_FULL] == 15
        got = [(await rx.recv())[0] for _ in range(5)]
        assert got == [b"0", b"1", b"2", b"3", b"4"]  # tail drop keeps the oldest
        # Room again: the next datagram is accepted.
        await tx.send(b"late", rx.local_address)
        async with asyncio.timeout(2):
            assert (await rx.recv())[0] == b"late"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host, family", [
    ("127.0.0.1", socket.AF_INET),
    pytest.param("::1", socket.AF_INET6,
                 marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")),
])
async def test_datagrams_the_kernel_dropped_for_a_full_buffer_are_counted(host, family):
    """A flood faster than the node reads is lost in the kernel, before the endpoint sees it:
    every datagram sent is then either delivered or counted as dropped by the kernel (read
    from /proc/net/udp, or udp6 for an IPv6 socket)."""
    sent = 60
    async with await UdpEndpoint.bind((host, 0)) as rx:
        rx._stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a few datagrams
        raw = socket.socket(family, socket.SOCK_DGRAM)
        try:
            for i in range(sent):  # no await: the endpoint's reader cannot run meanwhile
                raw.sendto(b"%04d" % i + b"x" * 996, rx.local_address)
        finally:
            raw.close()
        await wait_until(lambda: rx.stats().datagrams_in + rx.stats().dropped[DropReason.KERNEL] == sent)
        assert rx.stats().dropped[DropReason.KERNEL] > 0
        assert rx.stats().datagrams_in > 0  # what fitted in the buffer is delivered
    assert rx.stats().dropped[DropReason.KERNEL] == sent - rx.stats().datagrams_in  # kept after close


def test_kernel_drops_reads_the_drops_column_of_this_sockets_line():
    text = (
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout "
        "inode ref pointer drops\n"
        " 1234: 0100007F:A1B2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 "
        "55501 2 0000000000000000 0\n"
        " 1235: 0100007F:A1B3 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 "
        "55502 2 0000000000000000 41\n"
        " garbage line\n"
    )
    assert kernel_drops(text, 55502) == 41
    assert kernel_drops(text, 55501) == 0
    assert kernel_drops(text, 99999) is None
    assert kernel_drops("", 1) is None


async def test_oversize_and_empty_datagrams_are_dropped_and_counted():
    async with await UdpEndpoint.bind(LOCAL) as rx:
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            raw.sendto(b"x" * (MAX_DATAGRAM + 1), rx.local_address)
            raw.sendto(b"", rx.local_address)
            raw.sendto(b"y" * MAX_DATAGRAM, rx.local_address)
        finally:
            raw.close()
        async with asyncio.timeout(2):
            data, _ = await rx.recv()
        assert data == b"y" * MAX_DATAGRAM
        stats = rx.stats()
        assert stats.datagrams_in == 3
        assert stats.dropped[DropReason.OVERSIZE] == 1
        assert stats.dropped[DropReason.EMPTY] == 1
        assert rx.queued == 0


async def test_send_rejects_bad_data_and_addresses_and_the_socket_survives():
    async with await UdpEndpoint.bind(LOCAL) as a, await UdpEndpoint.bind(LOCAL) as b:
        with pytest.raises(ValueError, match="1..1400 bytes"):
            await a.send(b"z" * (MAX_DATAGRAM + 1), b.local_address)
        with pytest.raises(ValueError, match="1..1400 bytes"):
            await a.send(b"", b.local_address)
        with pytest.raises(TypeError):
            await a.send("text", b.local_address)
        for bad in [("127.0.0.1",), ("localhost", 9), ("127.0.0.1", 0), ("127.0.0.1", 70000),
                    ("127.0.0.1", "9"), ["127.0.0.1", 9], ("::1", 9), None]:
            with pytest.raises(ValueError):
                await a.send(b"x", bad)
        # asyncio closes a datagram transport on a TypeError from sendto; ours is still open.
        await a.send(b"still here", b.local_address)
        async with asyncio.timeout(2):
            assert (await b.recv())[0] == b"still here"


async def test_refused_send_is_counted_not_raised():
    async with await UdpEndpoint.bind(LOCAL) as a:
        # Broadcast without SO_BROADCAST: the kernel refuses (EACCES) and nothing leaves the host.
        await a.send(b"x", ("255.255.255.255", 9))
        assert a.stats().socket_errors == 1
        assert a.stats().datagrams_out == 0


async def test_close_wakes_a_waiting_recv_and_ends_iteration():
    ep = await UdpEndpoint.bind(LOCAL)
    waiter = asyncio.create_task(ep.recv())
    await asyncio.sleep(0.01)
    await ep.close()
    with pytest.raises(UdpClosed):
        async with asyncio.timeout(2):
            await waiter
    assert [item async for item in ep] == []
    with pytest.raises(UdpClosed):
        await ep.send(b"x", ("127.0.0.1", 9))
    await ep.close()  # idempotent


async def test_a_crashed_reader_surfaces_in_recv_instead_of_hanging(monkeypatch):
    async with await UdpEndpoint.bind(LOCAL) as rx, await UdpEndpoint.bind(LOCAL) as tx:
        def broken(data, addr):
            raise RuntimeError("bug in the reader")

        monkeypatch.setattr(rx, "_accept", broken)
        await tx.send(b"boom", rx.local_address)
        with pytest.raises(UdpClosed) as info:
            async with asyncio.timeout(2):
                await rx.recv()
        assert isinstance(info.value.__cause__, RuntimeError)
    assert rx._stream._transport.is_closing()  # close() still released the socket


async def test_bind_to_a_port_in_use_is_a_user_error():
    async with await UdpEndpoint.bind(LOCAL) as a:
        with pytest.raises(UserError, match="choose another --port"):
            await UdpEndpoint.bind(a.local_address)
    with pytest.raises(UserError, match="--interface"):
        await UdpEndpoint.bind(("203.0.113.7", 0))  # TEST-NET-3: no interface here has it


def test_bad_udp_config_is_a_user_error():
    with pytest.raises(UserError, match="max_datagram"):
        UdpConfig(max_datagram=0)
    with pytest.raises(UserError, match="queue_size"):
        UdpConfig(queue_size=0)


# -- the fault layer on real sockets --


async def send_numbered(tx, rx, n, gap_every=50):
    """Send 0..n-1 to ``rx`` in bursts, each after the reader has caught up with the last
    (a loaded machine could otherwise overflow the kernel's receive buffer: real loss)."""
    for i in range(n):
        await tx.send(i.to_bytes(4, "big"), rx.local_address)
        if i % gap_every == gap_every - 1:
            await wait_until(lambda: rx.stats().datagrams_in >= tx.stats().datagrams_out - gap_every, 20)


def numbers(received):
    return [int.from_bytes(data, "big") for data, _ in received]


async def test_receive_faults_drop_and_count_on_sockets():
    config = UdpConfig.faulty(FaultConfig.lossy(0.3, seed=11))
    async with await UdpEndpoint.bind(LOCAL, config) as rx, await UdpEndpoint.bind(LOCAL) as tx:
        await send_numbered(tx, rx, 1000)
        await wait_until(lambda: rx.stats().datagrams_in == 1000, 20)
        got = numbers(await drain(rx))
        dropped = rx.stats().dropped[DropReason.FAULT]
        assert len(got) + dropped == 1000
        assert 250 < dropped < 350
        assert got == sorted(got)  # loss alone never reorders


async def test_send_faults_duplicate_and_reorder_on_sockets():
    faults = FaultConfig(duplicate=0.2, reorder=0.2, reorder_delay=0.03, seed=12)
    async with await UdpEndpoint.bind(LOCAL, UdpConfig(send_faults=faults)) as tx, \
            await UdpEndpoint.bind(LOCAL) as rx:
        await send_numbered(tx, rx, 500)
        await wait_until(lambda: tx.held_back == 0 and rx.stats().datagrams_in == tx.stats().datagrams_out, 20)
        got = numbers(await drain(rx))
        assert set(got) == set(range(500))  # nothing lost
        assert 560 < len(got) < 640  # about 20% duplicated
        assert tx.stats().datagrams_out == len(got)
        assert got != sorted(got)  # held-back datagrams were overtaken


async def test_receive_delay_holds_datagrams_back():
    config = UdpConfig.faulty(FaultConfig(delay_min=0.08, delay_max=0.1, seed=13))
    async with await UdpEndpoint.bind(LOCAL, config) as rx, await UdpEndpoint.bind(LOCAL) as tx:
        start = time.monotonic()
        await tx.send(b"slow", rx.local_address)
        async with asyncio.timeout(2):
            await rx.recv()
        assert 0.08 <= time.monotonic() - start < 1.0


async def test_close_cancels_delayed_deliveries():
    config = UdpConfig(send_faults=FaultConfig(delay_min=0.2, delay_max=0.2, seed=14),
                       recv_faults=FaultConfig(delay_min=0.2, delay_max=0.2, seed=15))
    rx = await UdpEndpoint.bind(LOCAL)
    async with await UdpEndpoint.bind(LOCAL, config) as slow:
        await slow.send(b"never", rx.local_address)
        await rx.send(b"held", slow.local_address)
        await wait_until(lambda: slow.stats().datagrams_in == 1)
        await slow.close()
        await asyncio.sleep(0.3)
        assert slow.queued == 0
        assert slow.stats().datagrams_out == 0
    assert rx.queued == 0
    await rx.close()


async def test_known_members_datagrams_are_received_before_a_backlog_of_junk():
    config = UdpConfig(queue_size=50)
    async with await UdpEndpoint.bind(LOCAL, config) as rx, await UdpEndpoint.bind(LOCAL) as junk, \
            await UdpEndpoint.bind(LOCAL) as member:
        rx.priority = lambda addr: addr[1] == member.local_address[1]
        for i in range(200):  # fills the ordinary queue, and more
            await junk.send(b"junk %d" % i, rx.local_address)
        await wait_until(lambda: rx.stats().dropped[DropReason.QUEUE_FULL] >= 150)
        await member.send(b"ping", rx.local_address)
        await wait_until(lambda: rx.queued == 51)
        data, addr = await rx.recv()
        assert (data, addr[1]) == (b"ping", member.local_address[1])
        assert rx.stats().dropped[DropReason.PRIORITY_QUEUE_FULL] == 0
