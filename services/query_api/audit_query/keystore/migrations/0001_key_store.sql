-- The key store: per-subject data keys and per-tenant pseudonym secrets, each wrapped under a key-encryption key
-- (KEK) that never enters the database. Owned by its own role; no read-model or projector role is granted
-- anything here, so the read model, its backups and its readers hold ciphertext only.
CREATE TABLE tenant_secrets (
    tenant_id  text        PRIMARY KEY,
    kek_id     text        NOT NULL,
    wrapped    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subject_keys (
    tenant_id  text        NOT NULL,
    pseudonym  text        NOT NULL CHECK (pseudonym ~ '^ps1_[0-9a-f]{32}$'),
    generation int         NOT NULL CHECK (generation > 0),
    kek_id     text        NOT NULL,
    wrapped    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, pseudonym, generation)
);

-- An erasure destroys every generation created before it; the tombstone stays so that a restored backup can be
-- cut back (`audit-query subjects reapply`), and the next use of the subject starts a new generation.
CREATE TABLE erasures (
    tenant_id  text        NOT NULL,
    pseudonym  text        NOT NULL,
    erased_at  timestamptz NOT NULL DEFAULT now(),
    erased_by  text        NOT NULL,
    generation int         NOT NULL,
    audit_id   uuid,
    PRIMARY KEY (tenant_id, pseudonym, generation)
);

CREATE TABLE legal_holds (
    tenant_id text        NOT NULL,
    pseudonym text        NOT NULL,
    reason    text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 1024),
    placed_by text        NOT NULL,
    placed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, pseudonym)
);
