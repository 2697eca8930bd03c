-- Every admin resource (group, API, policy, credential, ...) is one JSON document, checked by
-- the same serde structs as the YAML config before it is written. `revision` counts writes
-- of that row (the admin API's ETag).
CREATE TABLE resources (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    revision BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
);

-- One row, bumped first in every write transaction: writers queue on it (so checks made in
-- the transaction hold until commit), and gateways watching the store compare it to see
-- that something changed.
CREATE TABLE generation (
    id INTEGER PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO generation (id, value) VALUES (1, 0);
