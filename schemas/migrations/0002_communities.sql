-- The directory of communities (institutions that receive studies), issue 3.
CREATE TABLE communities (
    id                  TEXT PRIMARY KEY,
    -- short public code, e.g. 'bM1X'; case-sensitive, unique
    code                TEXT NOT NULL UNIQUE,
    name                TEXT NOT NULL,
    city                TEXT NOT NULL DEFAULT '',
    address             TEXT NOT NULL DEFAULT '',
    -- JSON array of department names
    departments         TEXT NOT NULL DEFAULT '[]',
    contact             TEXT NOT NULL DEFAULT '',
    accepts_inbound     BIGINT NOT NULL DEFAULT 1,
    -- name, city, departments and code folded for search (lower case, umlauts spelled out)
    search_text         TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);
