-- What is served: an API is callable in an environment only once published there. Each
-- publication is a snapshot of the API's definition; `deployments` says which one each
-- environment serves (none: not published, or taken offline).
CREATE TABLE publications (
    api_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    version BIGINT NOT NULL,
    description TEXT NOT NULL,
    published_at_ms BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (api_id, environment, version)
);

CREATE TABLE deployments (
    api_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (api_id, environment)
);
