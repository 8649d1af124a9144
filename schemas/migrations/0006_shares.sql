-- Access codes (issue 5): shares of a patient's studies, redeemed by the patient (or a doctor they
-- forward the code to) with a second factor; the audit trail of every access.
-- Portable SQL (SQLite and PostgreSQL); times are Unix milliseconds.

-- States: draft (files being added, no code yet) → active → revoked | deleted. Expiry is a time,
-- not a state; the retention job stamps purged_at once the data is gone.
CREATE TABLE shares (
    id                  TEXT PRIMARY KEY,
    community_id        TEXT NOT NULL REFERENCES communities (id),
    -- who made it: 'user:<id>', 'connector:<id>', 'cli', or 'share:<id>' for a forwarded code
    created_by          TEXT NOT NULL,
    -- a derived (forwarded) code: never outlives its parent, revoked with it
    parent_id           TEXT,
    patient_id          TEXT NOT NULL DEFAULT '',
    -- HMAC-SHA256 of the normalised code with the hub secret; NULL while a draft
    code_hash           TEXT UNIQUE,
    -- the second factor: PAT_BIRTH_DATE, PASSWORD, STUDY_DATE or CUSTOM (DLX question types)
    question_type       TEXT NOT NULL,
    question_text       TEXT NOT NULL DEFAULT '',
    -- argon2id PHC string of the normalised answer
    answer_hash         TEXT NOT NULL DEFAULT '',
    state               TEXT NOT NULL,
    note                TEXT NOT NULL DEFAULT '',
    created_at          BIGINT NOT NULL,
    issued_at           BIGINT,
    expires_at          BIGINT NOT NULL,
    revoked_at          BIGINT,
    deleted_at          BIGINT,
    purged_at           BIGINT,
    -- wrong answers since the last right one, and the lock they caused
    failed_attempts     BIGINT NOT NULL DEFAULT 0,
    locked_until        BIGINT NOT NULL DEFAULT 0,
    last_access_at      BIGINT
);
CREATE INDEX shares_community ON shares (community_id, created_at);
CREATE INDEX shares_expiry ON shares (purged_at, expires_at);
CREATE INDEX shares_parent ON shares (parent_id);

-- The instances a share lets its holder see (fixed when the code is issued).
CREATE TABLE share_instances (
    share_id            TEXT NOT NULL REFERENCES shares (id),
    sop_instance_uid    TEXT NOT NULL,
    series_uid          TEXT NOT NULL,
    study_uid           TEXT NOT NULL,
    PRIMARY KEY (share_id, sop_instance_uid)
);
CREATE INDEX share_instances_sop ON share_instances (sop_instance_uid);
CREATE INDEX share_instances_study ON share_instances (study_uid);

-- Report PDFs, encrypted like instances: a blob key wrapped by the study's data key, so
-- shredding the study shreds its reports too. Visible to the patient from release_at on.
CREATE TABLE share_reports (
    id                  TEXT PRIMARY KEY,
    share_id            TEXT NOT NULL REFERENCES shares (id),
    study_uid           TEXT NOT NULL,
    name                TEXT NOT NULL,
    size                BIGINT NOT NULL,
    sha256              TEXT NOT NULL,
    blob_path           TEXT NOT NULL,
    blob_key            TEXT NOT NULL,
    release_at          BIGINT NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX share_reports_share ON share_reports (share_id);

-- Sessions after a right answer: a browser cookie or a DLX bearer token (SHA-256 of the secret).
CREATE TABLE share_sessions (
    token_hash          TEXT PRIMARY KEY,
    share_id            TEXT NOT NULL REFERENCES shares (id),
    kind                TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    last_seen_at        BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL
);
CREATE INDEX share_sessions_share ON share_sessions (share_id);

-- Who did what to which object, with what result. Identifiers only, never demographics.
CREATE TABLE audit_events (
    id                  TEXT PRIMARY KEY,
    at                  BIGINT NOT NULL,
    -- 'user:<id>', 'connector:<id>', 'share:<id>', 'admin', 'cli', 'anonymous', 'system'
    actor               TEXT NOT NULL,
    client_addr         TEXT NOT NULL DEFAULT '',
    action              TEXT NOT NULL,
    object_kind         TEXT NOT NULL,
    object_id           TEXT NOT NULL DEFAULT '',
    result              TEXT NOT NULL,
    detail              TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_object ON audit_events (object_kind, object_id, at);
CREATE INDEX audit_events_at ON audit_events (at);
