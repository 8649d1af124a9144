-- The audit trail becomes tamper-evident (issue 6): every record carries its place in one chain
-- (seq) and hash = SHA-256(previous hash, the record's fields). `audit_head` holds the chain's
-- end; appending takes its row lock, so hubs sharing a database append one at a time.
-- `ferry-hub audit verify` recomputes the chain and names the first record that was changed,
-- removed or inserted. Records written before this migration are chained at the next start.
ALTER TABLE audit_events ADD COLUMN seq BIGINT;
ALTER TABLE audit_events ADD COLUMN hash TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX audit_events_seq ON audit_events (seq);
CREATE INDEX audit_events_actor ON audit_events (actor, at);

CREATE TABLE audit_head (
    id                  BIGINT PRIMARY KEY,
    seq                 BIGINT NOT NULL,
    hash                TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');
