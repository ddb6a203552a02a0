"""Fuzzing the /ws protocol core (sans I/O) over both session kinds, and the avatar-SDK session's
audio intake below it. Seeded and deterministic: a failure replays with the same SEED.

Messages are generated valid, then mutated (truncated, bytes flipped, fields of the wrong type,
unknown types and fields, oversized, deeply nested, extreme numbers, lone surrogates), sent out of
order, or binary (empty, odd lengths, full-scale and DC PCM16, 1 MiB). The state machine's every
answer is checked against the rules of docs/protocol.md, which are restated here on their own.
"""

from __future__ import annotations

import collections
import json
import random
import tracemalloc

import numpy as np
from syncvid_client import wire

from realtime.metrics import ServerMetrics
from realtime.server import protocol as P
from realtime.server.sdk.playout import SpeechPlayout
from realtime.server.sdk.session import SdkSession
from tests.fakes import make_config, make_engine
from tests.realtime.server.fuzz_messages import Clock, extreme_pcm, first_message, message, valid_message

SEED = 1729
N_SESSIONS = 1400  # sessions of 1 + 0..15 messages, and 1 in 20 of 111 on a frozen clock: ~19,000 messages
MIN_MESSAGES = 10_000
MAX_ERROR_CHARS = 300  # an error names the input, it never echoes it back (a 1 MB field stays on the server)
EVENTS = (P.Offer, P.Start, P.Interrupt, P.EndOfUtterance, P.Close, P.Report, P.AudioChunk, P.ProtocolError)


# ---- the rules, restated ---------------------------------------------------------------------------------
def expect(proto_state, kind, spent: int, frozen: bool, msg: str | bytes) -> tuple:
    """(outcome, new state, new kind) the rules demand. Outcome: an event to compare, or (code,
    close code) of the error. A text's meaning comes from the stateless ``parse_text``; what the
    session does with it is checked against docs/protocol.md."""
    S, E = P.State, P.ErrorCode
    if proto_state is S.CLOSED:
        return (E.UNEXPECTED, None), S.CLOSED, kind
    if isinstance(msg, bytes):
        if proto_state is S.AWAITING_FIRST:
            return (E.UNEXPECTED, P.CLOSE_POLICY), S.CLOSED, kind
        if kind is P.SessionKind.WEBRTC:
            return (E.UNEXPECTED, None), proto_state, kind
        if len(msg) % 2:
            return (E.BAD_AUDIO, None), proto_state, kind
        return P.AudioChunk(msg), proto_state, kind
    parsed = P.parse_text(msg)
    if proto_state is S.AWAITING_FIRST:
        if isinstance(parsed, P.Offer):
            return parsed, S.ACTIVE, P.SessionKind.WEBRTC
        if isinstance(parsed, P.Start):
            return parsed, S.ACTIVE, P.SessionKind.SDK
        if isinstance(parsed, P.Close):
            return parsed, S.CLOSED, kind
        code = parsed.code if isinstance(parsed, P.ProtocolError) else E.UNEXPECTED
        return (code, P.CLOSE_POLICY), S.CLOSED, kind
    if frozen and spent >= P.CONTROL_BURST:
        return (E.RATE_LIMITED, P.CLOSE_POLICY), S.CLOSED, kind
    if isinstance(parsed, (P.Offer, P.Start)):
        return (E.UNEXPECTED, None), proto_state, kind
    if isinstance(parsed, P.ProtocolError):
        return (parsed.code, None), proto_state, kind
    return parsed, (S.CLOSED if isinstance(parsed, P.Close) else proto_state), kind


def check_error(ev: P.ProtocolError) -> None:
    assert isinstance(ev.code, P.ErrorCode) and ev.close_code in (None, P.CLOSE_POLICY)
    assert isinstance(ev.message, str) and 0 < len(ev.message) <= MAX_ERROR_CHARS, ev.message[:500]
    assert "\n" not in ev.message and "Traceback" not in ev.message
    assert json.loads(P.encode(ev.to_message()))["code"] == ev.code.value


def is_close(text: str) -> bool:
    return isinstance(P.parse_text(text), P.Close)


def place_of(category: str, state: P.State, kind, msg, over_rate: bool) -> str | None:
    """Where a message is out of its place (its refusal must not depend on the message), or None."""
    if state is P.State.CLOSED:
        return "after close"
    if state is P.State.AWAITING_FIRST:
        return "binary first" if isinstance(msg, bytes) else "control first" if category == "control" else None
    if isinstance(msg, str) and over_rate:
        return "over the rate"
    if category == "again":
        return "second first"
    return "binary in webrtc" if isinstance(msg, bytes) and kind is P.SessionKind.WEBRTC else None


def run_session(rng: random.Random, stats: collections.Counter, outcomes: dict) -> tuple[list, bool, list]:
    frozen = rng.random() < 0.05  # these send 101+ control messages in one instant: the 101st closes
    proto = P.SessionProtocol(now=Clock(0.0 if frozen else 0.05))
    if frozen:
        msgs = [("first", json.dumps(valid_message(rng, rng.choice(["offer", "start"]))))]
        texts = (m for m in iter(lambda: message(rng), None) if isinstance(m[1], str) and not is_close(m[1]))
        msgs += [next(texts) for _ in range(110)]
    else:
        msgs = [first_message(rng)] + [message(rng) for _ in range(rng.randrange(16))]
    spent, results = 0, []
    for category, msg in msgs:
        state, kind = proto.state, proto.kind
        want, want_state, want_kind = expect(state, kind, spent, frozen, msg)
        place = place_of(category, state, kind, msg, frozen and spent >= P.CONTROL_BURST)
        if state is P.State.ACTIVE and isinstance(msg, str):
            spent += 1
        ev = proto.receive_text(msg) if isinstance(msg, str) else proto.receive_bytes(msg)
        assert isinstance(ev, EVENTS), (category, msg[:200], ev)
        if isinstance(ev, P.ProtocolError):
            check_error(ev)
            got = (ev.code, ev.close_code)
            stats[ev.code.value] += 1
        else:
            got = ev
            stats[type(ev).__name__] += 1
        assert got == want, (category, state, kind, msg[:200], ev)
        assert (proto.state, proto.kind) == (want_state, want_kind), (category, msg[:200])
        if place:
            outcomes[place].add(got if isinstance(ev, P.ProtocolError) else type(ev).__name__)
        stats["messages"] += 1
        stats[category] += 1
        results.append(got)
    return [m for _, m in msgs], frozen, results


def test_protocol_core_answers_every_generated_and_mutated_message_by_the_rules():
    rng = random.Random(SEED)
    stats: collections.Counter = collections.Counter()
    outcomes: dict[str, set] = collections.defaultdict(set)
    replays = 0
    for i in range(N_SESSIONS):
        msgs, frozen, results = run_session(rng, stats, outcomes)
        if i % 10 == 0:  # the same messages to a fresh session: the same answers
            proto = P.SessionProtocol(now=Clock(0.0 if frozen else 0.05))
            again = [proto.receive_text(m) if isinstance(m, str) else proto.receive_bytes(m) for m in msgs]
            assert [(e.code, e.close_code) if isinstance(e, P.ProtocolError) else e for e in again] == results
            replays += 1
    assert stats["messages"] >= MIN_MESSAGES, stats
    E = P.ErrorCode
    assert dict(outcomes) == {"after close": {(E.UNEXPECTED, None)}, "binary first": {(E.UNEXPECTED, P.CLOSE_POLICY)},
                              "control first": {(E.UNEXPECTED, P.CLOSE_POLICY)}, "second first": {(E.UNEXPECTED, None)},
                              "binary in webrtc": {(E.UNEXPECTED, None)},
                              "over the rate": {(E.RATE_LIMITED, P.CLOSE_POLICY)}}, outcomes
    # every category was exercised, and every error a client can cause in the core came up
    for category in ("valid", "fields", "text", "again", "oversized", "binary", "first", "control"):
        assert stats[category] >= 20, (category, stats)
    for code in (E.BAD_JSON, E.BAD_MESSAGE, E.UNKNOWN_TYPE, E.MISSING_FIELD, E.BAD_OPTION, E.UNEXPECTED,
                 E.RATE_LIMITED, E.BAD_AUDIO):
        assert stats[code.value] >= 5, (code, stats)
    for name in ("Offer", "Start", "Interrupt", "EndOfUtterance", "Close", "Report", "AudioChunk"):
        assert stats[name] >= 20, (name, stats)
    assert replays == N_SESSIONS // 10


# ---- below the protocol: the SDK session's speech buffer ---------------------------------------------------
def test_playout_passes_extreme_pcm_through_sample_exact_and_refuses_what_would_overflow():
    rng = random.Random(SEED)
    for rate in wire.SAMPLE_RATES:
        p = SpeechPlayout(rate, max_buffer_s=0.5)
        sent, refused = [], 0
        while True:  # chunks of 1 sample to 0.2 s, as decoded by the protocol, until the buffer refuses
            pcm = P.SessionProtocol(now=Clock(0.05))
            pcm.receive_text('{"type":"start"}')
            chunk = pcm.receive_bytes(extreme_pcm(rng, rng.choice([1, 2, 7, rng.randrange(1, rate // 5)])).tobytes())
            before = p.buffered
            if not p.receive(np.frombuffer(chunk.pcm16, "<i2")):
                assert p.buffered == before  # a refused chunk keeps nothing
                refused += 1
                if refused == 3:
                    break
                continue
            sent.append(np.frombuffer(chunk.pcm16, "<i2"))
            assert p.buffered <= p.max_buffer
        speech = np.concatenate(sent)
        assert p.max_buffer - rate // 5 < len(speech) <= p.max_buffer
        out = np.concatenate([p.next_packet().samples for _ in range(len(speech) // p.packet + 2)])
        assert out.dtype == np.int16
        np.testing.assert_array_equal(out[:len(speech)], speech)  # +-32767/-32768 exact, nothing clipped
        assert not out[len(speech):].any() and p.buffered == 0


def test_playout_memory_is_about_its_samples_whatever_the_chunk_count():
    """One sample per message (2 bytes on the wire): the buffer's memory stays near the samples'
    own, not an object per chunk (~80x)."""
    rate, seconds = 8000, 10.0
    p = SpeechPlayout(rate, max_buffer_s=seconds)
    proto = P.SessionProtocol()
    proto.receive_text('{"type":"start"}')
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        n = 0
        # each message its own bytes (as off the socket), decoded as SdkSession.receive_audio does
        while p.receive(np.frombuffer(proto.receive_bytes((0x8000).to_bytes(2, "little")).pcm16, "<i2")):
            n += 1
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert n == rate * seconds and p.buffered == n
    assert held < 4 * 2 * n, held  # 2 bytes a sample; an array object per chunk would be ~150 bytes each
    got = np.concatenate([p.next_packet().samples for _ in range(n // p.packet)])
    assert (got == -32768).all() and p.buffered == 0


async def test_sdk_session_audio_intake_stays_bounded_under_a_flood():
    """SdkSession's intake driven without I/O: the protocol's chunks go in faster than real time
    with end_of_utterance and interrupt mixed in, the pacer's step runs as if 20 ms passed, and
    every buffer keeps to its bound: speech to ``sdk_buffer_s``, the outbox to its size."""
    rng = random.Random(SEED)
    engine = make_engine()
    config = make_config()
    config.limits.sdk_buffer_s = 2.0  # 2 s fills with a few thousand chunks
    try:
        for rate in (8000, 48000):
            proto = P.SessionProtocol(now=Clock(0.05))
            start = proto.receive_text(json.dumps({"type": "start", "options": {"sample_rate": rate}}))
            sent: list[str | bytes] = []

            async def send(m):
                sent.append(m)

            session = SdkSession(engine, config, ServerMetrics(), start.options, send)
            full = accepted = 0
            for step in range(4000):
                chunk = proto.receive_bytes(extreme_pcm(rng, rng.choice([1, 3, 160, 4000])).tobytes())
                if session.receive_audio(chunk.pcm16):
                    accepted += 1
                else:
                    full += 1
                assert session.playout.buffered <= session.playout.max_buffer
                if step % 50 == 0:
                    session._push(step * 0.02)  # the pacer's 20 ms step (held: the grid is not anchored)
                if step % 400 == 399:
                    session.end_of_utterance()
                if step % 1000 == 999:
                    session.interrupt()
                    assert session.playout.buffered == 0
                assert session.outbox.qsize() <= session.outbox.maxsize
            assert full > 100 and accepted > 1000, (full, accepted)
            assert len(session.live.ring16.buf) == session.live.ring16.capacity  # rings never grow
            await session.close()
            assert session.outbox.empty() and not session.tasks
    finally:
        engine.close()
