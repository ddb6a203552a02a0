"""The transport-neutral live session: speech samples with their arrival times in, one output slot
at a time out (frame, its audio, its events), on one clock. Every transport (WebRTC, the avatar
SDK, the virtual camera) wraps a ``LiveSession``; see docs/architecture.md."""
