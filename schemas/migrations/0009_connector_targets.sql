-- Connectors under partial failure (issue 19): each PACS target's part of a transfer, as the
-- receiving connector reports it, so the sender and the clinic see "in the PACS, archive pending";
-- and the connector's health from its heartbeats.

CREATE TABLE transfer_targets (
    transfer_id         TEXT NOT NULL REFERENCES transfers (id),
    target              TEXT NOT NULL,
    required            BIGINT NOT NULL,
    state               TEXT NOT NULL,
    stored              BIGINT NOT NULL,
    total               BIGINT NOT NULL,
    since               BIGINT,
    message             TEXT NOT NULL DEFAULT '',
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (transfer_id, target)
);

ALTER TABLE connectors ADD COLUMN last_error_at BIGINT;
-- The heartbeat's per-target states (JSON list of TargetHealth).
ALTER TABLE connectors ADD COLUMN targets TEXT NOT NULL DEFAULT '[]';
