"""Generated and mutated /ws messages for the fuzzing tests (test_protocol_fuzz.py on the sans-I/O
core, test_network_fuzz.py against a live server): valid messages, structural and textual
mutations, oversized ones, binary PCM16 with extreme samples. All from a seeded ``random.Random``."""

from __future__ import annotations

import json
import random

import numpy as np
from syncvid_client import wire

from realtime.server import protocol as P

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
JUNK_CHARS = '{}[]",:\\ \x00\x7f\ud800\udfffé€💥0123456789aeflnrstu-+.eE'
WRONG_VALUES = [None, True, False, 0, -1, 2**70, -(2**63), 1e308, -1e-308, 0.5, "", "x" * 300, [], [1, "a"],
                {}, {"type": "start"}, "v=0", "\ud800", "16000"]


class Clock:
    """The protocol's rate-limit clock: moving (20 messages a second, never limited) or frozen."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


# ---- message generators ------------------------------------------------------------------------------
def valid_options(rng: random.Random, sdk: bool) -> dict:
    pool = {"low_latency": rng.random() < 0.5, "seed": rng.choice([0, 1, P.MAX_SEED]),
            "avatar": rng.choice(["default", "anna", "x" * P.MAX_AVATAR_NAME])}
    if sdk:
        pool.update(sample_rate=rng.choice(wire.SAMPLE_RATES), video=rng.choice(wire.VIDEO_FORMATS),
                    jpeg_quality=rng.randint(1, 100), visemes=rng.random() < 0.5, blendshapes=rng.random() < 0.5,
                    audio_out=rng.random() < 0.5)
    return {k: v for k, v in pool.items() if rng.random() < 0.4}


def valid_message(rng: random.Random, kind: str | None = None) -> dict:
    kind = kind or rng.choice(["interrupt", "clear_buffer", "end_of_utterance", "report", "report", "close"])
    if kind == "offer":
        return {"type": "offer", "sdp": SDP, "options": valid_options(rng, False)}
    if kind == "start":
        return {"type": "start", "options": valid_options(rng, True)}
    if kind == "report":
        return {"type": "report", "glass_to_glass_ms": rng.choice([0, 312.5, 59999.9, rng.uniform(0, 6e4)])}
    if kind == "close":
        return {"type": "close", "reason": rng.choice(["", "done", "é" * 50])}
    return {"type": kind}


def mutate_fields(rng: random.Random, msg: dict) -> object:
    """A structural mutation of a valid message (still JSON)."""
    msg = json.loads(json.dumps(msg))
    r = rng.randrange(8)
    if r == 0:
        msg["type"] = rng.choice(WRONG_VALUES + ["dance", "OFFER", "start ", "é" * 100])
    elif r == 1:
        msg[rng.choice(["sdp", "options", "glass_to_glass_ms", "reason"])] = rng.choice(WRONG_VALUES)
    elif r == 2:
        msg.setdefault("options", {})[rng.choice(list(P.START_OPTIONS) + ["volume", "x" * 500])] = \
            rng.choice(WRONG_VALUES)
    elif r == 3:
        msg[rng.choice(["extra", "type2", "\ud800", ""])] = rng.choice(WRONG_VALUES)  # unknown fields are ignored
    elif r == 4:
        msg.pop("type", None)
    elif r == 5:
        return rng.choice([[msg], "text", 42, None, True])
    elif r == 6:
        msg["options"] = {"seed": rng.choice([-1, P.MAX_SEED + 1, 2**200]),
                          "sample_rate": rng.choice([0, 11025, -16000, 16000.0, 10**9])}
    else:
        msg["sdp"] = rng.choice(["v=1", " ", "v=0" + "a" * (P.MAX_SDP_CHARS + 1), "\x00v=0", "hello"])
        msg["type"] = "offer"
    return msg


def mutate_text(rng: random.Random, text: str) -> str:
    """A textual mutation: mostly no longer JSON."""
    r = rng.randrange(6)
    if r == 0:
        return text[:rng.randrange(len(text) + 1)]
    chars = list(text)
    if r == 1:
        for _ in range(rng.randint(1, 4)):
            chars[rng.randrange(len(chars))] = rng.choice(JUNK_CHARS)
        return "".join(chars)
    if r == 2:
        i = rng.randrange(len(chars) + 1)
        return text[:i] + "".join(rng.choice(JUNK_CHARS) for _ in range(rng.randint(1, 8))) + text[i:]
    if r == 3:
        return text + text
    if r == 4:
        return "".join(rng.choice(JUNK_CHARS) for _ in range(rng.randint(0, 40)))
    return rng.choice(["", " ", "null", "true", "[]", "1e999", "NaN", '"type"', "{", "}",
                       '{"type":"report","glass_to_glass_ms":NaN}', '{"type":"report","glass_to_glass_ms":Infinity}',
                       '{"type":"report","glass_to_glass_ms":-Infinity}',
                       '{"type":"report","glass_to_glass_ms":1e999}'])


def oversized_text(rng: random.Random) -> str:
    """Rare and costly: huge fields, deep nesting, integers too long to convert."""
    return rng.choice([
        json.dumps({"type": "close", "reason": "r" * 1_000_000}),
        json.dumps({"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 20000}),
        json.dumps({"type": "dance" * 100_000}),
        json.dumps({"type": "start", "options": {"avatar": "a" * 100_000}}),
        "[" * 100_000 + "]" * 100_000,
        '{"type":' * 50_000,
        '{"type":"report","glass_to_glass_ms":' + "9" * 5000 + "}",
    ])


def pcm_chunk(rng: random.Random, odd_ok: bool = True) -> bytes:
    n = rng.choice([0, 1, 2, 3, 160, 959, 960, rng.randrange(0, 4096), rng.randrange(0, 4096)])
    if not odd_ok:
        n -= n % 2
    pattern = rng.randrange(5)
    if pattern == 0:  # full-scale square wave
        x = np.where(np.arange(n // 2) % 2, 32767, -32768).astype("<i2")
    elif pattern == 1:  # DC at either rail
        x = np.full(n // 2, rng.choice([32767, -32768, 1, -1]), "<i2")
    else:
        x = np.frombuffer(rng.randbytes(n - n % 2), "<i2")
    return x.tobytes() + (b"\x80" if n % 2 else b"")


def message(rng: random.Random) -> tuple[str, str | bytes]:
    """One message after the first: the mix a hostile or broken client sends."""
    r = rng.random()
    if r < 0.30:
        return "valid", json.dumps(valid_message(rng))
    if r < 0.45:
        return "fields", json.dumps(mutate_fields(rng, valid_message(rng)))
    if r < 0.60:
        return "text", mutate_text(rng, json.dumps(valid_message(rng)))
    if r < 0.68:
        return "again", json.dumps(valid_message(rng, rng.choice(["offer", "start"])))
    if r < 0.685:
        return "oversized", oversized_text(rng)
    if r < 0.70 and rng.random() < 0.05:
        return "binary", rng.randbytes(1 << 20) + rng.choice([b"", b"\x01"])  # 1 MiB: the transport caps this
    return "binary", pcm_chunk(rng)


def first_message(rng: random.Random) -> tuple[str, str | bytes]:
    r = rng.random()
    if r < 0.35:
        return "first", json.dumps(valid_message(rng, "start"))
    if r < 0.60:
        return "first", json.dumps(valid_message(rng, "offer"))
    if r < 0.64:
        return "first", json.dumps(valid_message(rng, "close"))
    if r < 0.72:
        return "binary", pcm_chunk(rng)
    if r < 0.80:
        return "control", json.dumps(valid_message(rng, rng.choice(["interrupt", "end_of_utterance", "report"])))
    return message(rng)


def extreme_pcm(rng: random.Random, n: int) -> np.ndarray:
    """Full scale at both rails, DC, alternating rails or noise: what a broken TTS sends."""
    return [np.full(n, 32767, np.int16), np.full(n, -32768, np.int16), np.full(n, rng.randint(-32768, 32767), np.int16),
            np.where(np.arange(n) % 2, 32767, -32768).astype(np.int16),
            np.frombuffer(rng.randbytes(2 * n), "<i2").astype(np.int16)][rng.randrange(5)]
