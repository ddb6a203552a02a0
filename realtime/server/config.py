"""Typed configuration of the real-time server (`configs/realtime.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from realtime.config import CONFIG_DIR, ConfigError, from_dict, load_yaml
from realtime.inference.factory import DiffusionConfig

DEFAULT_CONFIG = CONFIG_DIR / "realtime.yaml"


@dataclass
class LimitsConfig:
    max_message_bytes: int = 256 * 1024  # an SDP offer is ~5 kB; PCM16 chunks of 1 s at 16 kHz are 32 kB
    # keepalive: a ping every ping_interval_s after the client's last message; a client that has not
    # answered it within half that (pulled cable, sleeping laptop) is dropped (1006): within 2.25 s
    ping_interval_s: float = 1.5
    close_timeout_s: float = 1.0  # wait for the client's side of a closing handshake, then cut
    ice_timeout_s: float = 4.0  # a peer that never connects (or whose ICE fails) is dropped after this
    audio_buffer_s: float = 4.0  # input audio ring per session; older audio is overwritten, never queued
    max_frames_ahead: int = 16  # rendered-but-not-sent frames per session
    teardown_timeout_s: float = 2.0  # time given to each task/peer connection to close
    # avatars of the library (avatars_dir) kept loaded besides the default, in the server and in the
    # inference process each; the least recently used is dropped (a running session keeps its own)
    max_avatars_loaded: int = 4
    sdk_buffer_s: float = 120.0  # speech an avatar-SDK session holds ahead of playback (TTS is faster than real time)
    sdk_send_queue_s: float = 2.0  # output queued for an SDK client that does not read; beyond it the session ends
    max_session_s: float = 4 * 3600.0  # a session is ended (session_ended "time limit") after this long
    max_connections_per_client: int = 8  # open /ws connections from one client address; more get 429
    # an HTTP connection that has not sent a complete request within this long is closed (also a
    # slow-loris client trickling its headers); idle keep-alive connections too
    http_idle_timeout_s: float = 10.0
    max_header_bytes: int = 8190  # one request line or header field; larger: 400 before any handler runs
    max_headers: int = 64  # header fields per request
    max_upload_bytes: int = 10 * 1024 * 1024  # a photo uploaded as an avatar (POST /avatars)
    max_upload_pixels: int = 40_000_000  # its width x height, read from the header before decoding (bombs)
    max_uploads: int = 200  # avatars the library folder may hold before uploads are refused (disk)


@dataclass
class RealtimeConfig:
    host: str = "127.0.0.1"  # localhost only unless asked: the page captures a microphone
    port: int = 8080
    fps: int = 25  # LatentSync's frame rate; the audio blocks are defined per video frame
    latency_budget_ms: float = 170.0  # speech sample arrival -> departure of the frame showing it
    low_latency_budget_ms: float = 90.0  # used with lookahead "low" (40 ms of future audio)
    # While lightly loaded (at most light_load_sessions sessions, no late frame anywhere for 10 s) a
    # session aims this much under its budget: less latency when the CPU has room (engine.LoadWatch)
    light_load_cut_ms: float = 20.0
    light_load_sessions: int = 2
    max_sessions: int = 4
    renderer: str = "embedded"  # embedded | diffusion
    lookahead: str = "full"  # full (120 ms of future audio) | low (<= 40 ms)
    avatar_dir: str | None = None  # None: the default avatar that ships with the install
    # a folder of avatars sessions choose from by name (photos, videos, prepared avatar folders); the
    # server's avatar (avatar_dir) is always offered as "default". None: that one alone
    avatars_dir: str | None = None
    inference: str = "process"  # process: models in a child process (no GIL shared with the event loop) | thread
    inference_threads: int = 2  # inference "thread" only: worker threads running the models in this process
    # inference "process" only: the child's nice value. Its jobs carry every session's deadlines, so
    # it should win the CPU over the server's own threads and anything else on the machine; below 0
    # needs CAP_SYS_NICE (root, or a container granted it), otherwise it keeps the server's priority.
    inference_nice: int = -10
    max_chunk: int = 4  # frames per renderer call at most (smaller when late)
    silence_dbfs: float = -45.0  # below this level a frame's audio window is silence -> rest frame
    video_codec: str = "h264"  # h264 | vp8: preferred outgoing codec (the client's others are fallbacks)
    video_preset: str = "ultrafast"  # libx264 preset of the outgoing H.264 (aiortc's default, medium: ~14 ms/frame)
    # true: each incoming Opus packet is decoded on arrival (webrtc/receive.py); false: aiortc's
    # audio jitter buffer, which releases a packet only after the 4th one behind it (+80 ms)
    direct_audio_receive: bool = True
    # true: outgoing audio is encoded as mono Opus on the event loop as each 20 ms frame is made
    # (media.OpusPacketEncoder); false: aiortc encodes it in its executor (stereo, ~1.5x the CPU)
    audio_encode_in_track: bool = True
    audio_extra_delay_ms: float = 0.0  # added to the outgoing audio's delay (receiver-side A/V trim)
    client_dir: str | None = None  # None: clients/web of the install (the browser page)
    # uploads (POST /avatars) are saved in the library folder (avatars_dir); without one, in this
    # folder, which then is the library (None: uploads/ in the cache). false: the library is read-only
    allow_uploads: bool = True
    uploads_dir: str | None = None
    # pages of these origins may open /ws (besides the server's own page); "*": any. Clients that send
    # no Origin (SDKs, agents) are judged by their token alone
    allowed_origins: list[str] = field(default_factory=list)
    tls_cert: str | None = None  # PEM certificate chain: serve https:// and wss:// (browsers need it off localhost)
    tls_key: str | None = None  # its PEM private key
    ice_servers: list[str] = field(default_factory=list)  # e.g. ["stun:stun.l.google.com:19302"]
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)  # renderer: diffusion only

    def __post_init__(self) -> None:
        if self.renderer not in ("embedded", "diffusion"):
            raise ConfigError(f"renderer must be 'embedded' or 'diffusion', got {self.renderer!r}")
        if self.renderer == "diffusion" and not (self.diffusion.unet and self.diffusion.vae):
            raise ConfigError("renderer: diffusion needs diffusion.unet (LatentSync's latentsync_unet.pt) and "
                              "diffusion.vae (a local diffusers VAE folder); set them in the config or pass "
                              "--unet and --vae to `syncvid serve`")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535 (0: any free port), got {self.port}")
        if self.max_sessions < 1:
            raise ConfigError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.lookahead not in ("full", "low"):
            raise ConfigError(f"lookahead must be 'full' or 'low', got {self.lookahead!r}")
        if self.inference not in ("process", "thread"):
            raise ConfigError(f"inference must be 'process' or 'thread', got {self.inference!r}")
        if self.video_codec not in ("h264", "vp8"):
            raise ConfigError(f"video_codec must be 'h264' or 'vp8', got {self.video_codec!r}")
        presets = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
        if self.video_preset not in presets:
            raise ConfigError(f"video_preset must be one of {', '.join(presets)}, got {self.video_preset!r}")
        if not 1 <= self.fps <= 60:
            raise ConfigError(f"fps must be 1..60, got {self.fps}")
        if not -20 <= self.inference_nice <= 19:
            raise ConfigError(f"inference_nice must be -20..19 (a nice value), got {self.inference_nice}")
        budget = min(self.latency_budget_ms, self.low_latency_budget_ms)
        if not 0 <= self.light_load_cut_ms <= budget / 4:
            raise ConfigError(f"light_load_cut_ms must be 0..{budget / 4:g} (a quarter of the smaller budget), "
                              f"got {self.light_load_cut_ms}")
        if self.light_load_sessions < 0:
            raise ConfigError(f"light_load_sessions must be >= 0, got {self.light_load_sessions}")
        if not 1 <= self.max_chunk <= 16:
            raise ConfigError(f"max_chunk must be 1..16, got {self.max_chunk}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate and its key: pass --tls-cert FILE and --tls-key FILE "
                              "(tls_cert and tls_key in the config)")
        lim = self.limits
        for name in ("max_session_s", "max_connections_per_client", "http_idle_timeout_s", "max_header_bytes",
                     "max_headers", "max_upload_bytes", "max_upload_pixels", "max_uploads", "max_message_bytes"):
            if getattr(lim, name) <= 0:
                raise ConfigError(f"limits.{name} must be > 0, got {getattr(lim, name)}")
        if self.limits.max_avatars_loaded < 1:
            raise ConfigError(f"limits.max_avatars_loaded must be >= 1, got {self.limits.max_avatars_loaded}")

    @property
    def budget_s(self) -> float:
        ms = self.low_latency_budget_ms if self.lookahead == "low" else self.latency_budget_ms
        return ms / 1000.0


def load_realtime_config(path: str | Path | None = None, overrides: dict | None = None) -> RealtimeConfig:
    """Loads `configs/realtime.yaml` (or ``path``); unknown keys are an error naming key and file.
    ``overrides`` (command-line flags; nested dicts for sections) replace the file's values before
    the config is checked, so a flag can complete what the file leaves out."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    data = {} if path == DEFAULT_CONFIG and not path.is_file() else load_yaml(path)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    source = str(path) + (" + command line" if overrides else "")
    return from_dict(RealtimeConfig, data, source=source)
