"""The stream keeper against the real embedded server (real WebRTC), with faults injected."""

from __future__ import annotations

import asyncio
import gc

from aiortc import RTCPeerConnection
from support.keeper import KEY, Harness, Spec, make_harness
from support.poll import eventually

from watcher.clock import ManualClock, SystemClock
from watcher.keeper.meters import RateMeter
from watcher.keeper.spec import KeeperTimings
from watcher.media.publisher import make_publisher
from watcher.media.whip import WhipPublisher
from watcher.server.settings import ServerSettings


async def frames_flowing(h: Harness, stream_id: str, more_than: int) -> bool:
    status = await h.client.get_stream(stream_id)
    return status.last_frame_index is not None and status.last_frame_index > more_than


async def test_goes_live_then_stop_deletes_its_streams(harness: Harness) -> None:
    keeper = harness.keeper()
    keeper.start()
    stream_id = await keeper.wait_live(10)
    status = await harness.client.get_stream(stream_id)
    assert status.state == "active" and status.last_frame_at_ms is not None
    await eventually(lambda: frames_flowing(harness, stream_id, 5))
    health = keeper.health()
    assert health.live and health.stream_id == stream_id
    assert health.frames_sent > 0 and health.lease_remaining_s > 0
    assert health.source_state == "live"
    await keeper.stop()
    ended = await harness.client.get_stream(stream_id)
    assert (ended.state, ended.end_reason) == ("ended", "deleted")
    assert keeper.stream_id is None and keeper.health().state == "stopped"


async def test_recovers_when_the_stream_is_deleted_behind_its_back(harness: Harness) -> None:
    keeper = harness.keeper()
    keeper.start()
    first = await keeper.wait_live(10)
    await harness.client.delete_stream(first)
    second = await eventually(lambda: keeper.stream_id not in (None, first) and keeper.stream_id)
    assert second != first
    await eventually(lambda: frames_flowing(harness, second, 3))
    assert keeper.health().streams_created == 2


async def test_recovers_when_the_server_reaps_the_stream(harness: Harness) -> None:
    keeper = harness.keeper()
    keeper.start()
    first = await keeper.wait_live(10)
    harness.server.registry.reap(first)
    second = await eventually(lambda: keeper.stream_id not in (None, first) and keeper.stream_id)
    await eventually(lambda: frames_flowing(harness, second, 3))


async def test_lease_survives_keepalive_503s(harness: Harness) -> None:
    keeper = harness.keeper()
    keeper.start()
    stream_id = await keeper.wait_live(10)
    fault = harness.server.faults.add(r"/keepalive$", status=503, times=5)
    await eventually(lambda: fault.spent, timeout=8)
    before = keeper.keepalives
    await eventually(lambda: keeper.keepalives > before, timeout=8)
    assert keeper.stream_id == stream_id
    assert keeper.health().keepalive_failures >= 1
    assert harness.stream(stream_id).active
    assert keeper.health().streams_created == 1


async def test_reconnects_a_dropped_publisher(harness: Harness) -> None:
    keeper = harness.keeper()
    keeper.start()
    stream_id = await keeper.wait_live(10)
    await eventually(lambda: frames_flowing(harness, stream_id, 3))
    session = harness.server.ingest.session_stats(stream_id)
    assert session is not None
    assert await harness.server.ingest.unpublish(stream_id, session.session_id)
    await eventually(lambda: keeper.publisher_reconnects >= 1, timeout=10)
    mark = (await harness.client.get_stream(stream_id)).last_frame_index
    await eventually(lambda: frames_flowing(harness, stream_id, mark + 3), timeout=10)
    assert keeper.stream_id == stream_id


async def test_failed_publisher_reconnects_keep_the_stream(harness: Harness) -> None:
    keeper = harness.keeper()
    keeper.start()
    stream_id = await keeper.wait_live(10)
    fault = harness.server.faults.add(r"/whip$", method="POST", status=503, times=3)
    session = harness.server.ingest.session_stats(stream_id)
    assert session is not None
    await harness.server.ingest.unpublish(stream_id, session.session_id)
    await eventually(lambda: fault.spent, timeout=10)
    mark = (await harness.client.get_stream(stream_id)).last_frame_index
    await eventually(lambda: frames_flowing(harness, stream_id, mark + 3), timeout=10)
    assert keeper.stream_id == stream_id and keeper.health().streams_created == 1
    assert keeper.publisher_reconnects >= 4


async def test_lease_lost_while_server_unreachable_is_recreated(harness: Harness) -> None:
    keeper = harness.keeper()
    keeper.start()
    first = await keeper.wait_live(10)
    # Every keepalive and status read fails until the 6 s lease runs out on the server.
    fault = harness.server.faults.add(rf"/streams/{first}(/keepalive)?$", status=503, times=None)
    await eventually(lambda: not harness.stream(first).active or None, timeout=12)
    harness.server.faults.clear()
    second = await eventually(lambda: keeper.stream_id not in (None, first) and keeper.stream_id,
                              timeout=10)
    assert fault.hits > 0 and second != first


async def test_waits_for_a_source_that_is_not_there_yet(harness: Harness) -> None:
    keeper = harness.keeper()
    keeper.start()
    await keeper.wait_live(10)
    # A camera that never gives a frame leases nothing.
    silent = harness.keeper(Spec(name="silent"))
    silent.frames  # noqa: B018 - the mailbox exists before start
    silent._source_factory = lambda spec, sink, on_frame: _SilentSource()  # type: ignore[assignment]
    silent.start()
    await asyncio.sleep(0.5)
    assert silent.state == "waiting_for_source" and silent.streams_created == 0


class _SilentSource:
    """A camera that is unreachable: it never delivers a frame."""

    class stats:
        state = "reconnecting"
        reconnects = 3

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


async def test_a_simulated_hour_of_keepalives_holds_the_lease() -> None:
    clock = ManualClock()
    instant = False

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0 if instant else seconds)

    h = await make_harness(ServerSettings(api_keys=[KEY], ttl_seconds=45), clock, sleep)
    keeper = h.keeper(sleep=sleep, timings=KeeperTimings(check_interval=5, stale_after=None))
    try:
        keeper.start()
        stream_id = await keeper.wait_live(10)
        instant = True
        start = clock.now_ms()
        await eventually(lambda: clock.now_ms() - start >= 3600_000, timeout=60, interval=0.01)
        instant = False
        # Renewals every 15 s +- 10 % for an hour: 218..267, the mean 240.
        assert 218 <= keeper.keepalives <= 267, keeper.keepalives
        assert keeper.keepalive_failures == 0
        assert keeper.streams_created == 1 and keeper.stream_id == stream_id
        assert h.stream(stream_id).active
        assert keeper.health().lease_remaining_s > 25
    finally:
        instant = False
        await keeper.stop()
        await h.server.aclose()
        await h.http.aclose()


async def test_the_lease_is_renewed_while_the_publisher_backs_off() -> None:
    h = await make_harness(ServerSettings(api_keys=[KEY], ttl_seconds=2), SystemClock())
    keeper = h.keeper(timings=KeeperTimings(check_interval=0.1, stale_after=1.0,
                                            publisher_backoff=(3.0, 3.0)))
    try:
        keeper.start()
        stream_id = await keeper.wait_live(10)
        session = h.server.ingest.session_stats(stream_id)
        assert session is not None
        await h.server.ingest.unpublish(stream_id, session.session_id)
        # The reconnect waits 3 s, longer than the 2 s lease: keepalives must go on.
        await eventually(lambda: keeper.publisher_reconnects >= 1, timeout=10)
        mark = (await h.client.get_stream(stream_id)).last_frame_index
        await eventually(lambda: frames_flowing(h, stream_id, mark + 3), timeout=10)
        assert keeper.stream_id == stream_id and keeper.health().streams_created == 1
    finally:
        await keeper.stop()
        await h.server.aclose()
        await h.http.aclose()


def _live(kind: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is kind)


async def test_recreating_streams_and_publishers_frees_their_connections(
        harness: Harness) -> None:
    """Soak guard: every lost stream or dropped publisher leaves nothing behind (peer
    connections, publishers, tasks), however often it happens."""
    before_pcs, before_publishers = _live(RTCPeerConnection), _live(WhipPublisher)
    keeper = harness.keeper()
    keeper.start()
    stream_id = await keeper.wait_live(10)
    tasks = len(asyncio.all_tasks())
    for i in range(6):
        if i % 2:
            harness.server.registry.reap(stream_id)
            stream_id = await eventually(
                lambda old=stream_id: keeper.stream_id not in (None, old) and keeper.stream_id)
        else:
            session = harness.server.ingest.session_stats(stream_id)
            assert session is not None
            reconnects = keeper.publisher_reconnects
            await harness.server.ingest.unpublish(stream_id, session.session_id)
            await eventually(lambda n=reconnects: keeper.publisher_reconnects > n)
        await eventually(lambda sid=stream_id: frames_flowing(harness, sid, 2))
    assert keeper.health().streams_created == 4 and keeper.publisher_reconnects >= 3
    # one publisher (here) and one ingest session (the server's) for the live stream;
    # closing the others' ICE and DTLS transports takes a while on a loaded machine
    await eventually(lambda: _live(RTCPeerConnection) <= before_pcs + 2,
                     timeout=60, interval=0.5)
    assert _live(WhipPublisher) == before_publishers + 1
    assert len(asyncio.all_tasks()) <= tasks + 2


async def test_the_lease_is_renewed_while_the_stream_is_being_established() -> None:
    """Publisher connect plus the first frame can outlast a short lease: it is kept alive."""
    h = await make_harness(ServerSettings(api_keys=[KEY], ttl_seconds=2), SystemClock())
    connect = asyncio.Event()

    def slow_publisher(*args, **kwargs):  # a publisher whose connection takes its time
        publisher = make_publisher(*args, **kwargs)
        start = publisher.start

        async def start_when_told() -> None:
            await connect.wait()
            await start()

        publisher.start = start_when_told
        return publisher

    keeper = h.keeper(publisher_factory=slow_publisher)
    try:
        keeper.start()
        await eventually(lambda: keeper.state == "publishing", timeout=10)
        [stream_id] = list(h.server.registry._streams)
        # Four renewals of a 2 s lease: well past its first expiry, still connecting.
        await eventually(lambda: keeper.keepalives >= 4, timeout=30)
        assert keeper.state == "publishing" and h.stream(stream_id).active
        connect.set()
        assert await keeper.wait_live(30) == stream_id
        assert keeper.streams_created == 1 and keeper.keepalive_failures == 0
    finally:
        connect.set()
        await keeper.stop()
        await h.server.aclose()
        await h.http.aclose()


async def test_the_first_publish_rate_reading_is_not_zero_while_frames_flow(
        harness: Harness) -> None:
    keeper = harness.keeper()
    keeper.start()
    stream_id = await keeper.wait_live(10)
    await eventually(lambda: frames_flowing(harness, stream_id, 5))
    first = keeper.health()  # the first time anything asks (metrics, watcher status)
    assert first.frames_sent > 5 and first.publish_fps > 0


def test_rate_meter_reads_from_the_start_of_publishing() -> None:
    meter = RateMeter()
    meter.start(0, 10_000)
    assert meter.rate(0, 10_300) == 0.0  # nothing sent yet
    assert meter.rate(6, 10_600) == 10.0  # 6 frames in 0.6 s: the first reading
    assert meter.rate(8, 11_000) == 10.0  # then every 2 s at most
    assert meter.rate(30, 12_000) == 15.0  # 30 frames in 2 s
    meter.start(30, 12_000)  # a publisher reconnect keeps the running sample
    assert meter.rate(40, 13_000) == 15.0
