-- Ferry hub core: the study index, per-study data keys and the blob bookkeeping.
-- Portable SQL: the same file runs on SQLite and PostgreSQL. Times are Unix milliseconds (BIGINT),
-- binary values are base64 TEXT, JSON documents are TEXT.

CREATE TABLE studies (
    study_uid           TEXT PRIMARY KEY,
    patient_id          TEXT NOT NULL DEFAULT '',
    patient_name        TEXT NOT NULL DEFAULT '',
    patient_name_norm   TEXT NOT NULL DEFAULT '',
    patient_birth_date  TEXT NOT NULL DEFAULT '',
    patient_sex         TEXT NOT NULL DEFAULT '',
    study_date          TEXT NOT NULL DEFAULT '',
    study_time          TEXT NOT NULL DEFAULT '',
    accession_number    TEXT NOT NULL DEFAULT '',
    study_id            TEXT NOT NULL DEFAULT '',
    study_description   TEXT NOT NULL DEFAULT '',
    referring_physician TEXT NOT NULL DEFAULT '',
    referring_physician_norm TEXT NOT NULL DEFAULT '',
    -- distinct modalities of the study's series, as '|CT|SR|' so one LIKE finds one modality
    modalities          TEXT NOT NULL DEFAULT '|',
    -- DICOM JSON of the study's patient/study level attributes (no bulk data)
    attrs               TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX studies_patient_id ON studies (patient_id);
CREATE INDEX studies_study_date ON studies (study_date);
CREATE INDEX studies_accession ON studies (accession_number);
CREATE INDEX studies_created ON studies (created_at, study_uid);

CREATE TABLE series (
    series_uid          TEXT PRIMARY KEY,
    study_uid           TEXT NOT NULL REFERENCES studies (study_uid),
    modality            TEXT NOT NULL DEFAULT '',
    series_number       TEXT NOT NULL DEFAULT '',
    series_description  TEXT NOT NULL DEFAULT '',
    series_date         TEXT NOT NULL DEFAULT '',
    series_time         TEXT NOT NULL DEFAULT '',
    attrs               TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX series_study ON series (study_uid, created_at);

CREATE TABLE instances (
    sop_instance_uid    TEXT PRIMARY KEY,
    series_uid          TEXT NOT NULL REFERENCES series (series_uid),
    study_uid           TEXT NOT NULL REFERENCES studies (study_uid),
    sop_class_uid       TEXT NOT NULL,
    instance_number     BIGINT,
    transfer_syntax     TEXT NOT NULL,
    -- plaintext size and SHA-256 of the original file, exactly as received
    size                BIGINT NOT NULL,
    sha256              TEXT NOT NULL,
    -- the encrypted blob and its key, wrapped by the study's data key
    blob_path           TEXT NOT NULL,
    blob_key            TEXT NOT NULL,
    -- pixel data layout for frame retrieval by byte range (JSON, see hub/src/ingest/parse.rs)
    pixel_layout        TEXT,
    number_of_frames    BIGINT NOT NULL DEFAULT 0,
    -- DICOM JSON metadata of the instance without bulk data (BulkDataURIs are added when served)
    metadata            TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX instances_series ON instances (series_uid, instance_number);
CREATE INDEX instances_study ON instances (study_uid);
CREATE INDEX instances_blob ON instances (blob_path);

-- One random AES-256 data key per study, wrapped by the key-encryption key `kek_id`.
-- Deleting the row crypto-shreds every blob of the study.
CREATE TABLE study_keys (
    study_uid           TEXT PRIMARY KEY,
    wrapped_key         TEXT NOT NULL,
    kek_id              TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);

-- Blobs being written. A row is added before the upload starts and removed in the transaction
-- that indexes the instance; rows older than the sweep age are orphans whose blobs get deleted.
CREATE TABLE pending_blobs (
    blob_path           TEXT PRIMARY KEY,
    created_at          BIGINT NOT NULL
);
