"""A state store made of parts from different backends: keys and ledger from one, counters from another."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.state.store import CounterStore, KeyStore, LedgerStore


@dataclass(frozen=True, slots=True)
class SplitStore:
    """StateStore over parts; `closers` close each backend once, in order (counters before records)."""

    keys: KeyStore
    counters: CounterStore
    ledger: LedgerStore
    closers: tuple[Callable[[], Awaitable[None]], ...]

    async def close(self) -> None:
        for close in self.closers:
            await close()
