"""The avatar-SDK transport: speech over ``/ws`` in, frames, audio and events out (docs/protocol.md)."""
