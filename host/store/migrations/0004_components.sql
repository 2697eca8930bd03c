-- Plugin components uploaded through the admin API, by their SHA-256 (hex). The bytes are
-- kept as base64 text: one column type that SQLite and PostgreSQL share (BLOB vs BYTEA).
CREATE TABLE components (
    sha256 TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
