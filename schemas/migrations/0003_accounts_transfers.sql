-- Accounts, sign-in, community roles and transfers (issue 3).
-- Portable SQL (SQLite and PostgreSQL); times are Unix milliseconds; booleans are 0/1 BIGINT.

CREATE TABLE users (
    id                  TEXT PRIMARY KEY,
    -- lower-cased; NULL for accounts that only sign in through an identity provider without email
    email               TEXT UNIQUE,
    email_verified      BIGINT NOT NULL DEFAULT 0,
    -- argon2id PHC string; NULL when the account signs in only through OpenID Connect
    password_hash       TEXT,
    name                TEXT NOT NULL DEFAULT '',
    practice            TEXT NOT NULL DEFAULT '',
    address             TEXT NOT NULL DEFAULT '',
    phone               TEXT NOT NULL DEFAULT '',
    is_hub_admin        BIGINT NOT NULL DEFAULT 0,
    -- consecutive failed sign-ins and the lockout they caused
    failed_logins       BIGINT NOT NULL DEFAULT 0,
    locked_until        BIGINT NOT NULL DEFAULT 0,
    disabled            BIGINT NOT NULL DEFAULT 0,
    created_at          BIGINT NOT NULL
);

-- Accounts linked to an OpenID Connect provider, by issuer + subject.
CREATE TABLE oidc_identities (
    issuer              TEXT NOT NULL,
    subject             TEXT NOT NULL,
    user_id             TEXT NOT NULL REFERENCES users (id),
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);

-- Pending OpenID Connect sign-ins (state → nonce, PKCE verifier), kept a few minutes.
CREATE TABLE oidc_logins (
    state               TEXT PRIMARY KEY,
    provider            TEXT NOT NULL,
    nonce               TEXT NOT NULL,
    pkce_verifier       TEXT NOT NULL,
    return_to           TEXT NOT NULL DEFAULT '',
    -- set when a signed-in user links the provider to their account
    link_user_id        TEXT,
    expires_at          BIGINT NOT NULL
);

-- Browser sessions; the cookie holds the token, the table its SHA-256.
CREATE TABLE sessions (
    token_hash          TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES users (id),
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Personal access tokens for the API; shown once, stored as SHA-256.
CREATE TABLE api_tokens (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES users (id),
    name                TEXT NOT NULL,
    token_hash          TEXT NOT NULL UNIQUE,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    revoked_at          BIGINT,
    last_used_at        BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- One-time links: email verification, password reset, first-admin setup. SHA-256 of the token.
CREATE TABLE email_tokens (
    token_hash          TEXT PRIMARY KEY,
    user_id             TEXT,
    purpose             TEXT NOT NULL,
    expires_at          BIGINT NOT NULL,
    used_at             BIGINT
);

ALTER TABLE communities ADD COLUMN requires_approval BIGINT NOT NULL DEFAULT 0;
ALTER TABLE communities ADD COLUMN default_share_days BIGINT NOT NULL DEFAULT 90;
-- bumped by every change, so the in-memory directory notices edits
ALTER TABLE communities ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;

-- Clinic staff: role 'admin' (manages members, approvals, settings) or 'member' (worklist).
CREATE TABLE memberships (
    community_id        TEXT NOT NULL REFERENCES communities (id),
    user_id             TEXT NOT NULL REFERENCES users (id),
    role                TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (community_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

-- Referrers asking to send to a community that only takes approved senders.
CREATE TABLE referrer_approvals (
    community_id        TEXT NOT NULL REFERENCES communities (id),
    user_id             TEXT NOT NULL REFERENCES users (id),
    -- 'pending', 'approved' or 'rejected'
    status              TEXT NOT NULL,
    decided_by          TEXT,
    created_at          BIGINT NOT NULL,
    decided_at          BIGINT,
    PRIMARY KEY (community_id, user_id)
);

-- A sending: from a user to a community, with a note. States: draft → sent → received →
-- stored | failed → done | rejected.
CREATE TABLE transfers (
    id                  TEXT PRIMARY KEY,
    sender_id           TEXT NOT NULL REFERENCES users (id),
    community_id        TEXT NOT NULL REFERENCES communities (id),
    reason              TEXT NOT NULL DEFAULT '',
    appointment         TEXT NOT NULL DEFAULT '',
    urgency             TEXT NOT NULL DEFAULT 'routine',
    state               TEXT NOT NULL,
    state_message       TEXT NOT NULL DEFAULT '',
    -- filled when sent, for the worklist: JSON summary and a folded search text
    summary             TEXT NOT NULL DEFAULT '{}',
    search_text         TEXT NOT NULL DEFAULT '',
    instance_count      BIGINT NOT NULL DEFAULT 0,
    bytes               BIGINT NOT NULL DEFAULT 0,
    created_at          BIGINT NOT NULL,
    sent_at             BIGINT,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX transfers_sender ON transfers (sender_id, created_at);
CREATE INDEX transfers_community ON transfers (community_id, state, sent_at);

-- The instances a transfer carries: what its sender and its community's members may see.
CREATE TABLE transfer_instances (
    transfer_id         TEXT NOT NULL REFERENCES transfers (id),
    sop_instance_uid    TEXT NOT NULL,
    series_uid          TEXT NOT NULL,
    study_uid           TEXT NOT NULL,
    PRIMARY KEY (transfer_id, sop_instance_uid)
);
CREATE INDEX transfer_instances_sop ON transfer_instances (sop_instance_uid);
CREATE INDEX transfer_instances_study ON transfer_instances (study_uid);

-- What happened to a transfer, in order, as its sender sees it.
CREATE TABLE transfer_events (
    id                  TEXT PRIMARY KEY,
    transfer_id         TEXT NOT NULL REFERENCES transfers (id),
    at                  BIGINT NOT NULL,
    state               TEXT NOT NULL,
    message             TEXT NOT NULL DEFAULT '',
    actor_id            TEXT
);
CREATE INDEX transfer_events_transfer ON transfer_events (transfer_id, at);
