"""A trivial zero-delay echo server speaking the same /ws offer/answer protocol: the transport floor.

Each outgoing video slot shows the avatar's first frame with the mouth open (drawn once, in advance,
by the embedded renderer) when the most recent received 20 ms audio packet is loud, and the outgoing audio is the most recent received packet. No
look-ahead, no model, no queue: whatever delay a client measures against it is aiortc's transport
(jitter buffers, codecs, pacing). `syncvid bench realtime` runs it in a subprocess next to the real
server. Run by hand: ``python -m realtime.bench.echo_server --port 8090``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.server import serve

from realtime.face.avatar import default_avatar
from realtime.render.embedded import EmbeddedRenderer
from realtime.render.mouth_warp import MouthParams
from realtime.server.webrtc.receive import install_direct_audio_receive, receiver_of
from realtime.server.webrtc.send import AudioOutputTrack, VideoOutputTrack
from realtime.session.timeline import AUDIO_OUT_RATE, MediaClock

log = logging.getLogger(__name__)

LOUD_RMS = 10 ** (-35 / 20)  # a speech packet; quieter is silence


def echo_frames(avatar, jaw_open: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """The echo's two frames, drawn once by the embedded renderer (no idle motion): mouth at rest,
    and mouth open as wide as speech opens it, so a landmark detector reads both like the engine's."""
    r = EmbeddedRenderer(idle=False)
    state = r.new_state(0)
    rest = r.render_params(avatar, 0, MouthParams(), state)
    opened = r.render_params(avatar, 0, MouthParams(jawOpen=jaw_open), state)
    return np.ascontiguousarray(rest), np.ascontiguousarray(opened)


async def serve_echo(host: str, port: int) -> None:
    avatar = default_avatar()
    rest, opened = echo_frames(avatar)

    async def handler(ws) -> None:
        msg = json.loads(await ws.recv())
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        state = {"loud": False, "last": np.zeros(960, np.int16)}
        clock = MediaClock()

        async def drain(track) -> None:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_OUT_RATE)
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                for out in resampler.resample(frame):
                    x = out.to_ndarray().reshape(-1)
                    state["last"] = x[:960] if len(x) >= 960 else np.pad(x, (0, 960 - len(x)))
                    state["loud"] = float(np.sqrt(np.mean((x / 32768.0) ** 2))) > LOUD_RMS

        tasks = []

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind == "audio":
                # the same receive path as the engine's sessions: the floor is the transport they see
                install_direct_audio_receive(receiver_of(pc, track))
                tasks.append(asyncio.create_task(drain(track)))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
        audio = AudioOutputTrack(clock, lambda k: state["last"])
        audio_sender = pc.addTrack(audio)
        pc.addTrack(VideoOutputTrack(clock, 25, lambda slot: opened if state["loud"] else rest))
        await pc.setLocalDescription(await pc.createAnswer())
        audio.use_opus_packets(pc, audio_sender)  # as the engine's sessions send it
        await ws.send(json.dumps({"type": "answer", "sdp": pc.localDescription.sdp}))
        try:
            async for _ in ws:
                pass
        finally:
            for t in tasks:
                t.cancel()
            await pc.close()

    async with serve(handler, host, port, compression=None):
        log.info("echo server on ws://%s:%d/ws", host, port)
        await asyncio.Future()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(serve_echo(args.host, args.port))


if __name__ == "__main__":
    main()
