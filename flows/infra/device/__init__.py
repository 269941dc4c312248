"""Measuring on the edge device itself: the agent that runs there (agent.py, what it measures and refuses;
server.py, its HTTP(S) side: time-outs, the connection cap; standard library, numpy, ONNX Runtime and pydantic
only), the host's client (client.py) and the emulation of a slower device (emulate.py)."""
