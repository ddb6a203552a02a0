"""A WebRTC session: one object owning its peer connection, tracks, tasks and buffers.

Everything the session creates is released in ``close()`` (called from the handler's ``finally``),
and ``wait_closed()`` returns as soon as the client is gone: socket closed (the handler sees it),
ICE failed or closed, or ICE never connected within ``limits.ice_timeout_s``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from realtime.metrics import ServerMetrics
from realtime.server.config import RealtimeConfig
from realtime.server.session_tasks import OutputRate, SessionTasks
from realtime.server.webrtc.receive import AudioInput, install_direct_audio_receive, receiver_of
from realtime.server.webrtc.send import AudioOutputTrack, VideoOutputTrack, install_h264_encoder, transceiver_of
from realtime.session.config import SessionConfig
from realtime.session.live import LiveSession
from realtime.session.shared import Engine

log = logging.getLogger(__name__)

_ids = itertools.count(1)  # session ids for logs only; carries no state worth resetting


class SessionError(Exception):
    """The session cannot start (bad SDP, no audio in the offer); sent to the client as an error."""


def check_offer_sections(sdp: str) -> None:
    """One audio and one video m-section, no more (each further one would be a track aiortc
    receives and decodes for nobody); the audio one sends (the speech comes from it); neither is
    rejected (port 0); DTLS needs a fingerprint. aiortc accepts some of these and the session
    would then sit idle, or fail once ICE connects."""
    try:
        sdp.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape: aiortc fails on it half-way
        raise SessionError("the offer's SDP is not UTF-8 text (it has a lone surrogate)") from None
    if any(ord(c) < 32 and c not in "\r\n\t" for c in sdp):
        raise SessionError("the offer's SDP has control characters; send the offer's text as the browser made it")
    sections: list[list[str]] = [[]]
    for ln in sdp.splitlines():
        if ln.startswith("m="):
            sections.append([])
        sections[-1].append(ln.strip())
    media = {k: [s for s in sections[1:] if s[0].startswith(f"m={k}")] for k in ("audio", "video")}
    n_audio, n_video = len(media["audio"]), len(media["video"])
    if n_audio != 1 or n_video != 1:
        raise SessionError("the offer must have exactly one audio (sendrecv) and one video (recvonly or sendrecv) "
                           f"section; it has {n_audio} audio and {n_video} video")
    for kind, (section,) in media.items():
        parts = section[0].split()
        if len(parts) < 2 or parts[1] == "0":
            raise SessionError(f"the offer's {kind} section is rejected (port 0); offer {kind} to use it")
    audio_dir = next((ln[2:] for ln in media["audio"][0] if ln in ("a=sendrecv", "a=sendonly", "a=recvonly",
                                                                    "a=inactive")), "sendrecv")
    if audio_dir not in ("sendrecv", "sendonly"):
        raise SessionError(f"the offer's audio section is {audio_dir}: the server needs the client's speech; "
                           "offer it sendrecv (or sendonly)")
    if not any(ln.startswith("a=fingerprint:") for sec in sections for ln in sec):
        raise SessionError("the offer has no a=fingerprint line: DTLS-SRTP needs one (send a browser/aiortc offer)")


class WebRTCSession:
    """A browser or aiortc peer's session: its peer connection and tracks around a ``LiveSession``."""

    def __init__(self, engine: Engine, config: RealtimeConfig, metrics: ServerMetrics,
                 options: dict | None = None) -> None:
        self.id = f"s{next(_ids)}"
        self.engine, self.config, self.metrics = engine, config, metrics
        options = options or {}
        session_config = SessionConfig.from_realtime(config, low_latency=bool(options.get("low_latency")),
                                                     seed=int(options.get("seed", 0)),
                                                     avatar=options.get("avatar", "default"))
        self.lookahead, self.budget_s = session_config.lookahead, session_config.budget_s
        self.pc: RTCPeerConnection | None = None
        self.live = LiveSession(engine, session_config, metrics)
        self.clock = self.live.clock
        self.video = VideoOutputTrack(self.clock, config.fps, self.live.frame_for, self._on_video_sent,
                                      offset=lambda: self.live.video_offset_s)
        self.audio = AudioOutputTrack(self.clock, self.live.samples_for, self.live.on_audio_sent)
        self.audio_input: AudioInput | None = None
        self.work = SessionTasks(self.id)  # a task that fails ends the session (work.failed says which)
        self.tasks, self.gone = self.work.tasks, self.work.gone
        self.output_rate = OutputRate()
        self.connected = asyncio.Event()
        self.closed = False
        self.started_at = time.monotonic()

    @property
    def failed(self) -> str | None:
        """Why the session ended on the server's side (a bug), if it did."""
        return self.work.failed

    def _spawn(self, coro, name: str) -> asyncio.Task:
        return self.work.spawn(coro, name)

    def _on_video_sent(self, slot: int, t: float) -> None:
        self.output_rate.frame_sent()
        self.live.on_video_sent(slot, t)

    def output_fps(self) -> float:
        return self.output_rate.now()

    async def start(self, offer_sdp: str) -> str:
        """Applies the client's offer; returns the answer SDP (ICE candidates included, non-trickle)."""
        servers = [RTCIceServer(urls=u) for u in self.config.ice_servers]
        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind == "audio" and self.audio_input is None:
                if self.config.direct_audio_receive:  # before the connection starts the receiver
                    install_direct_audio_receive(receiver_of(pc, track))
                self.audio_input = AudioInput(track, self.live)
                self._spawn(self.audio_input.run(), "audio-in")

        @pc.on("connectionstatechange")
        def on_state() -> None:
            log.info("session %s connection %s", self.id, pc.connectionState)
            if pc.connectionState == "connected":
                self.connected.set()
            elif pc.connectionState in ("failed", "closed"):
                self.gone.set()

        check_offer_sections(offer_sdp)
        # Tracks (and codec preferences) go in before the offer is applied: aiortc negotiates the
        # codec order when it applies the remote description.
        audio_sender = pc.addTrack(self.audio)
        video_sender = pc.addTrack(self.video)
        video_transceiver = transceiver_of(pc, video_sender)
        # the server never reads the client's camera: a sendrecv offer must not make aiortc receive
        # and decode it into a queue nobody drains
        video_transceiver.direction = "sendonly"
        self._prefer_codec(video_transceiver, self.config.video_codec)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as e:  # aiortc raises ValueError and friends on malformed SDP
            raise SessionError(f"the offer's SDP could not be used ({e}); send a browser/aiortc offer") from None
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:  # an offer aiortc took but cannot answer (mids, directions...)
            raise SessionError(f"the offer's SDP could not be answered ({type(e).__name__}: {e}); send a "
                               "browser/aiortc offer") from None
        if video_transceiver.currentDirection not in ("sendonly", "sendrecv"):
            raise SessionError("the offer's video section must be recvonly or sendrecv: the server sends the "
                               "avatar's video and receives none")
        install_h264_encoder(pc, video_sender, self.config.video_preset)
        if self.config.audio_encode_in_track:
            self.audio.use_opus_packets(pc, audio_sender)
        await self.live.prime()  # a closed-mouth first frame, before ICE connects (milliseconds)
        self.live.start()
        for task in self.live.tasks:  # "encode", "render": failures end this session, as the others'
            task.set_name(f"{self.id}-{task.get_name().rsplit('-', 1)[-1]}")
            self.work.watch(task)
        self._spawn(self._ice_watchdog(), "ice-watchdog")
        return pc.localDescription.sdp

    @staticmethod
    def _prefer_codec(transceiver, codec: str) -> None:
        """H.264 (x264 ultrafast/zerolatency) costs ~35 % less CPU per frame than VP8 at 512x512;
        the client's other codecs stay as fallbacks."""
        mime = {"h264": "video/H264", "vp8": "video/VP8"}[codec]
        caps = RTCRtpSender.getCapabilities("video").codecs
        ordered = [c for c in caps if c.mimeType == mime] + [c for c in caps if c.mimeType != mime]
        transceiver.setCodecPreferences(ordered)

    async def _ice_watchdog(self) -> None:
        try:
            await asyncio.wait_for(self.connected.wait(), self.config.limits.ice_timeout_s)
        except asyncio.TimeoutError:
            log.info("session %s: ICE did not connect within %.1f s", self.id, self.config.limits.ice_timeout_s)
            self.gone.set()

    def interrupt(self) -> None:
        self.live.interrupt()

    def end_of_utterance(self) -> None:
        self.live.end_of_utterance()

    @property
    def skipped(self) -> int:
        """Slots not sent because the loop stalled."""
        return self.video.skipped

    async def close(self) -> None:
        """Releases every task, track and buffer; idempotent."""
        if self.closed:
            return
        self.closed = True
        await self.work.cancel(self.config.limits.teardown_timeout_s)
        self.video.stop()
        self.audio.stop()
        if self.pc is not None:
            try:
                await asyncio.wait_for(self.pc.close(), self.config.limits.teardown_timeout_s)
            except Exception:  # a stuck transport must not keep the session alive
                log.warning("session %s: peer connection did not close cleanly", self.id, exc_info=True)
        await self.live.close()
        self.audio_input = None
        log.info("session %s closed after %.1f s (%s)", self.id, time.monotonic() - self.started_at,
                 dict(self.live.counts))
