"""A minimal RTSP server that plays an H.264 file in a loop, for tests of RTSP sources.

FFmpeg's RTSP muxer only pushes to a server (ANNOUNCE/RECORD); it cannot serve one.
This one answers OPTIONS, DESCRIBE (an SDP with the clip's SPS/PPS), SETUP (RTP over
the RTSP connection, interleaved channels 0-1), PLAY and TEARDOWN, then sends the
clip's access units as RTP (RFC 6184: single NAL unit or FU-A packets) at the clip's
frame rate, as an IP camera does. Anything the client sends on an interleaved channel
(RTCP) is read and ignored.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import struct
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import av
from av.bitstream import BitStreamFilterContext

MTU_PAYLOAD = 1200
PAYLOAD_TYPE = 96


def read_access_units(path: Path) -> tuple[list[tuple[list[bytes], bool]], float]:
    """The clip's access units as (NAL units, is_keyframe), and its frame rate."""
    units: list[tuple[list[bytes], bool]] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 25)
        annexb = BitStreamFilterContext("h264_mp4toannexb", stream)
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            for out in annexb.filter(packet):
                units.append((split_nal_units(bytes(out)), packet.is_keyframe))
    return units, rate


def split_nal_units(data: bytes) -> list[bytes]:
    parts = data.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
    return [p for p in parts if p]


class RtspFileServer:
    """``async with RtspFileServer(path) as url``: ``rtsp://127.0.0.1:PORT/cam``."""

    def __init__(self, path: Path) -> None:
        self.units, self.fps = read_access_units(path)
        nals = [n for unit, _ in self.units for n in unit]
        self.sps = next(n for n in nals if n[0] & 0x1F == 7)
        self.pps = next(n for n in nals if n[0] & 0x1F == 8)
        self.sessions = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        try:
            yield f"rtsp://127.0.0.1:{port}/cam"
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def sdp(self, url: str) -> str:
        sprop = ",".join(base64.b64encode(n).decode() for n in (self.sps, self.pps))
        return ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=watcher test\r\nc=IN IP4 0.0.0.0\r\n"
                "t=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                f"a=fmtp:96 packetization-mode=1;profile-level-id={self.sps[1:4].hex()};"
                f"sprop-parameter-sets={sprop}\r\na=control:{url}/track1\r\n")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        sender: asyncio.Task[None] | None = None
        try:
            while True:
                first = await reader.readexactly(1)
                if first == b"$":  # interleaved data from the client (RTCP): skip it
                    _, length = struct.unpack(">BH", await reader.readexactly(3))
                    await reader.readexactly(length)
                    continue
                head = first + await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, url, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:] if line)}
                if int(headers.get("content-length", 0)):
                    await reader.readexactly(int(headers["content-length"]))
                extra, body = "", ""
                if method == "OPTIONS":
                    extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n"
                elif method == "DESCRIBE":
                    body = self.sdp(url)
                    extra = (f"Content-Base: {url}/\r\nContent-Type: application/sdp\r\n"
                             f"Content-Length: {len(body)}\r\n")
                elif method == "SETUP":
                    extra = ("Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
                             "Session: 12345678\r\n")
                elif method == "PLAY":
                    extra = "Session: 12345678\r\nRange: npt=0.000-\r\n"
                writer.write(f"RTSP/1.0 200 OK\r\nCSeq: {headers.get('cseq', '0')}\r\n"
                             f"{extra}\r\n{body}".encode())
                await writer.drain()
                if method == "PLAY" and sender is None:
                    self.sessions += 1
                    sender = asyncio.create_task(self._send(writer))
                elif method == "TEARDOWN":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await sender
            writer.close()
            self._tasks.discard(task)

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        ssrc, seq = random.getrandbits(32), random.getrandbits(16)
        step = Fraction(90_000) / Fraction(self.fps).limit_denominator(1000)
        start, n = loop.time(), 0
        while True:
            nals, _ = self.units[n % len(self.units)]
            timestamp = int(n * step) & 0xFFFFFFFF
            payloads = [p for nal in nals for p in _packetize(nal)]
            for i, payload in enumerate(payloads):
                marker = 0x80 if i == len(payloads) - 1 else 0
                rtp = struct.pack(">BBHII", 0x80, marker | PAYLOAD_TYPE, seq, timestamp,
                                  ssrc) + payload
                seq = (seq + 1) & 0xFFFF
                writer.write(b"$\x00" + struct.pack(">H", len(rtp)) + rtp)
            await writer.drain()
            n += 1
            await asyncio.sleep(max(0.0, start + n / self.fps - loop.time()))


def _packetize(nal: bytes) -> list[bytes]:
    """RFC 6184: one packet for a small NAL unit, FU-A fragments for a large one."""
    if len(nal) <= MTU_PAYLOAD:
        return [nal]
    header, body = nal[0], nal[1:]
    indicator = (header & 0xE0) | 28
    chunks = [body[i:i + MTU_PAYLOAD] for i in range(0, len(body), MTU_PAYLOAD)]
    out = []
    for i, chunk in enumerate(chunks):
        fu = header & 0x1F
        if i == 0:
            fu |= 0x80
        if i == len(chunks) - 1:
            fu |= 0x40
        out.append(bytes([indicator, fu]) + chunk)
    return out
