-- The key service's escrow key pair (X25519): a fail-open producer that cannot get a subject's key seals the
-- personal fields to its public key, and the service turns them into fields sealed under the subjects' keys later.
CREATE TABLE escrow_keys (
    id         text        PRIMARY KEY,
    public_key bytea       NOT NULL CHECK (length(public_key) = 32),
    kek_id     text        NOT NULL,
    wrapped    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
