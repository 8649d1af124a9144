-- A community's optional logo (PNG or JPEG, small), shown in the directory.
CREATE TABLE community_logos (
    community_id        TEXT PRIMARY KEY REFERENCES communities (id),
    content_type        TEXT NOT NULL,
    -- base64 of the image bytes
    data                TEXT NOT NULL,
    updated_at          BIGINT NOT NULL
);
