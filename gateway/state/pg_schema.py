"""Versioned schema of the PostgreSQL store (managed keys and the usage ledger).

`gateway_schema` holds one row per migration applied. gateway.state.postgres runs the missing steps
in one transaction under an advisory lock, so ten replicas starting together apply each step exactly
once and the others wait, then see it done. A database written by a newer gateway is refused rather
than misread. Tables carry a `gateway_` prefix: the database may be shared with other software.
Append steps; never edit one that shipped.
"""

from __future__ import annotations

# Any constant works, as long as it stays the same across versions: it names "the gateway's schema".
LOCK_ID = 0x6761_7465_7761_7901  # "gateway" + 1

CREATE_VERSIONS = "CREATE TABLE IF NOT EXISTS gateway_schema (version integer PRIMARY KEY, applied_at double precision)"

MIGRATIONS: tuple[str, ...] = (
    # 1: managed keys, their generation (every replica polls it), the ledger
    """
    CREATE TABLE gateway_meta (name text PRIMARY KEY, value bigint NOT NULL);
    INSERT INTO gateway_meta (name, value) VALUES ('keys_generation', 0);
    CREATE TABLE gateway_keys (
        name text PRIMARY KEY, digest bytea NOT NULL UNIQUE, prefix text NOT NULL,
        created_at double precision NOT NULL, updated_at double precision, revoked_at double precision,
        expires_at double precision, models text, limits text NOT NULL, metadata text NOT NULL
    );
    CREATE TABLE gateway_ledger (
        id bigserial PRIMARY KEY,
        writer uuid NOT NULL, seq bigint NOT NULL,
        at double precision NOT NULL, request_id text NOT NULL, key text NOT NULL, model text NOT NULL,
        provider text, served_model text, status integer NOT NULL, error_type text,
        input_tokens bigint NOT NULL, output_tokens bigint NOT NULL, cached_tokens bigint NOT NULL,
        reasoning_tokens bigint NOT NULL, cost_usd double precision, duration_ms double precision NOT NULL,
        ttft_ms double precision, attempts integer NOT NULL, fallbacks integer NOT NULL, endpoint text NOT NULL,
        UNIQUE (writer, seq)
    );
    CREATE INDEX gateway_ledger_by_time ON gateway_ledger (at);
    """,
)
