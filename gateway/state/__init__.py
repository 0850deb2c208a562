"""Shared state behind one small interface (gateway.state.store); SQLite is the embedded default."""
