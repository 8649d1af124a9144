-- The index is per holding (issue 17). A UID is whatever the writer of a file put there: never a
-- secret, never proof. So instance, series and study rows are keyed by their **origin** — the
-- holding whose upload wrote them: 'transfer:<id>', 'share:<id>', or 'hub' (the operator's own
-- STOW-RS and uploads) — together with the UID. Two tenants that send the same UIDs get separate
-- rows, separate blobs and separate data keys; what a caller sees is derived only from the rows its
-- holdings link. Links carry the origin of the row they point at.
--
-- Data keys: `study_keys.key_id` is '<origin>|<study uid>' for keys made from now on. Rows that
-- existed before keep their key (key_id = the study UID) and are given the origin of the first
-- holding that linked them (transfers before shares), or 'hub'.

ALTER TABLE study_keys RENAME COLUMN study_uid TO key_id;

CREATE TABLE index_studies (
    origin              TEXT NOT NULL,
    study_uid           TEXT NOT NULL,
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
    modalities          TEXT NOT NULL DEFAULT '|',
    attrs               TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (study_uid, origin)
);

CREATE TABLE index_series (
    origin              TEXT NOT NULL,
    series_uid          TEXT NOT NULL,
    study_uid           TEXT NOT NULL,
    modality            TEXT NOT NULL DEFAULT '',
    series_number       TEXT NOT NULL DEFAULT '',
    series_description  TEXT NOT NULL DEFAULT '',
    series_date         TEXT NOT NULL DEFAULT '',
    series_time         TEXT NOT NULL DEFAULT '',
    attrs               TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (series_uid, origin),
    FOREIGN KEY (study_uid, origin) REFERENCES index_studies (study_uid, origin)
);

CREATE TABLE index_instances (
    origin              TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL,
    series_uid          TEXT NOT NULL,
    study_uid           TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    instance_number     BIGINT,
    transfer_syntax     TEXT NOT NULL,
    size                BIGINT NOT NULL,
    sha256              TEXT NOT NULL,
    blob_path           TEXT NOT NULL,
    -- the blob's key, wrapped by the data key `key_id` of study_keys
    blob_key            TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    pixel_layout        TEXT,
    number_of_frames    BIGINT NOT NULL DEFAULT 0,
    metadata            TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (sop_instance_uid, origin),
    FOREIGN KEY (series_uid, origin) REFERENCES index_series (series_uid, origin)
);

-- Existing rows: the origin of the first holding that links an instance.
CREATE TABLE index_origins AS
SELECT i.sop_instance_uid, i.series_uid, i.study_uid, COALESCE(
        (SELECT 'transfer:' || MIN(ti.transfer_id) FROM transfer_instances ti WHERE ti.sop_instance_uid = i.sop_instance_uid),
        (SELECT 'share:' || MIN(si.share_id) FROM share_instances si WHERE si.sop_instance_uid = i.sop_instance_uid),
        'hub') AS origin
FROM instances i;

INSERT INTO index_studies (origin, study_uid, patient_id, patient_name, patient_name_norm, patient_birth_date,
    patient_sex, study_date, study_time, accession_number, study_id, study_description, referring_physician,
    referring_physician_norm, modalities, attrs, created_at, updated_at)
SELECT o.origin, s.study_uid, s.patient_id, s.patient_name, s.patient_name_norm, s.patient_birth_date,
    s.patient_sex, s.study_date, s.study_time, s.accession_number, s.study_id, s.study_description,
    s.referring_physician, s.referring_physician_norm, s.modalities, s.attrs, s.created_at, s.updated_at
FROM (SELECT DISTINCT origin, study_uid FROM index_origins) o JOIN studies s ON s.study_uid = o.study_uid;

INSERT INTO index_series (origin, series_uid, study_uid, modality, series_number, series_description,
    series_date, series_time, attrs, created_at)
SELECT o.origin, se.series_uid, se.study_uid, se.modality, se.series_number, se.series_description,
    se.series_date, se.series_time, se.attrs, se.created_at
FROM (SELECT DISTINCT origin, series_uid FROM index_origins) o JOIN series se ON se.series_uid = o.series_uid;

INSERT INTO index_instances (origin, sop_instance_uid, series_uid, study_uid, sop_class_uid, instance_number,
    transfer_syntax, size, sha256, blob_path, blob_key, key_id, pixel_layout, number_of_frames, metadata, created_at)
SELECT o.origin, i.sop_instance_uid, i.series_uid, i.study_uid, i.sop_class_uid, i.instance_number, i.transfer_syntax,
    i.size, i.sha256, i.blob_path, i.blob_key, i.study_uid, i.pixel_layout, i.number_of_frames, i.metadata, i.created_at
FROM instances i JOIN index_origins o ON o.sop_instance_uid = i.sop_instance_uid;

DROP TABLE index_origins;
DROP TABLE instances;
DROP TABLE series;
DROP TABLE studies;
ALTER TABLE index_studies RENAME TO studies;
ALTER TABLE index_series RENAME TO series;
ALTER TABLE index_instances RENAME TO instances;

CREATE INDEX studies_patient_id ON studies (patient_id);
CREATE INDEX studies_study_date ON studies (study_date);
CREATE INDEX studies_accession ON studies (accession_number);
CREATE INDEX studies_created ON studies (created_at, study_uid);
-- Keys lead with the UID, so lookups by UID alone (any origin) use them too; the study index
-- covers the counts QIDO makes (distinct SOP Instance UIDs of a study, by origin).
CREATE INDEX series_study ON series (study_uid, series_uid, origin);
CREATE INDEX instances_series ON instances (series_uid, origin, instance_number, sop_instance_uid);
CREATE INDEX instances_study ON instances (study_uid, sop_instance_uid, origin);
CREATE INDEX instances_blob ON instances (blob_path);

-- Links name the row they point at: (origin, UID).
ALTER TABLE transfer_instances ADD COLUMN origin TEXT NOT NULL DEFAULT 'hub';
UPDATE transfer_instances SET origin = COALESCE(
    (SELECT i.origin FROM instances i WHERE i.sop_instance_uid = transfer_instances.sop_instance_uid), 'hub');
ALTER TABLE share_instances ADD COLUMN origin TEXT NOT NULL DEFAULT 'hub';
UPDATE share_instances SET origin = COALESCE(
    (SELECT i.origin FROM instances i WHERE i.sop_instance_uid = share_instances.sop_instance_uid), 'hub');
CREATE INDEX transfer_instances_row ON transfer_instances (origin, sop_instance_uid);
CREATE INDEX share_instances_row ON share_instances (origin, sop_instance_uid);

-- Reports name the data key that wraps them.
ALTER TABLE share_reports ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
UPDATE share_reports SET key_id = study_uid;
