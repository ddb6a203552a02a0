"""Audio to visemes: a small model on per-frame Whisper feature blocks predicting the 15 OVR
visemes and ARKit-named mouth blendshapes, trained here on espeak-ng speech."""
