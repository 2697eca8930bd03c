-- Values the gateway keeps for itself, outside the configuration (never imported, exported
-- or replaced by an import): the admin token's hash.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
