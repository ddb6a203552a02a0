"""The models ' side: the inference worker, the inference process and the messages it speaks, and
the factory of renderers and encoders both the server and that process build from."""
