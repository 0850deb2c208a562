"""Talking to upstream providers: endpoints, transport, wire formats, the built-in echo."""
