"""Clients of the engine: WebRTC / WebSocket peers, virtual camera, browser page."""
