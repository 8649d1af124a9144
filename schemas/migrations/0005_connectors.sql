-- Site connectors (issue 4, hub side): registered by a community's admins, authenticated by
-- OAuth2 client credentials, claiming transfers with a lease and reporting what the PACS stored.
CREATE TABLE connectors (
    id                  TEXT PRIMARY KEY,
    community_id        TEXT NOT NULL REFERENCES communities (id),
    name                TEXT NOT NULL,
    client_id           TEXT NOT NULL UNIQUE,
    -- SHA-256 of the client secret (32 random bytes: a fast hash is enough)
    secret_hash         TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    revoked_at          BIGINT,
    -- heartbeat
    last_seen_at        BIGINT,
    version             TEXT NOT NULL DEFAULT '',
    queue_depth         BIGINT NOT NULL DEFAULT 0,
    last_error          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX connectors_community ON connectors (community_id);

-- Short-lived access tokens from the token endpoint (SHA-256 of the token).
CREATE TABLE connector_tokens (
    token_hash          TEXT PRIMARY KEY,
    connector_id        TEXT NOT NULL REFERENCES connectors (id),
    expires_at          BIGINT NOT NULL
);

ALTER TABLE transfers ADD COLUMN lease_owner TEXT;
ALTER TABLE transfers ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;

-- Instances the clinic's PACS confirmed (DIMSE status, 0 = success, warnings recorded).
CREATE TABLE transfer_acks (
    transfer_id         TEXT NOT NULL REFERENCES transfers (id),
    sop_instance_uid    TEXT NOT NULL,
    status              BIGINT NOT NULL,
    acked_at            BIGINT NOT NULL,
    PRIMARY KEY (transfer_id, sop_instance_uid)
);
