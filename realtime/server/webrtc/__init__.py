"""The WebRTC transport: a browser or aiortc peer sends its microphone and receives the avatar's
video and the speech, both paced on one clock. A thin wrapper around ``session.LiveSession``."""
