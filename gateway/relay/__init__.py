"""Relaying upstream answers to the client: SSE framing, the stream relay, usage and cost."""
