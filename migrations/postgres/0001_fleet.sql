-- The fleet: servers, the customer domains routed to them, and the instances
-- placed on them. Times are Unix milliseconds (UTC), as in the SQLite schema.
-- Text compares and sorts byte by byte (COLLATE "C"), as SQLite does, so both
-- backends list records in the same order whatever the database's locale.

CREATE TABLE servers (
    id          TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    url         TEXT COLLATE "C" NOT NULL,
    region      TEXT COLLATE "C",
    capacity_mb BIGINT NOT NULL CHECK (capacity_mb >= 0),
    token       TEXT COLLATE "C",
    domain      TEXT COLLATE "C",
    status      TEXT COLLATE "C" NOT NULL DEFAULT 'unknown'
                CHECK (status IN ('unknown', 'online', 'offline', 'draining')),
    last_seen   BIGINT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX servers_region ON servers (region);

CREATE TABLE tenants (
    domain      TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    server_id   TEXT COLLATE "C" NOT NULL
                REFERENCES servers (id) ON DELETE RESTRICT ON UPDATE RESTRICT,
    process     TEXT COLLATE "C" NOT NULL,
    instance_id TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX tenants_server ON tenants (server_id);
CREATE INDEX tenants_name ON tenants (name);

CREATE TABLE instances (
    tenant      TEXT COLLATE "C" NOT NULL,
    instance_id TEXT COLLATE "C" NOT NULL,
    process     TEXT COLLATE "C" NOT NULL,
    server_id   TEXT COLLATE "C" NOT NULL
                REFERENCES servers (id) ON DELETE RESTRICT ON UPDATE RESTRICT,
    memory_mb   BIGINT NOT NULL CHECK (memory_mb >= 0),
    desired     TEXT COLLATE "C" NOT NULL DEFAULT 'running'
                CHECK (desired IN ('running', 'stopped')),
    observed    TEXT COLLATE "C" NOT NULL DEFAULT 'unknown',
    observed_at BIGINT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, instance_id),
    -- tenement names an instance "{process}:{tenant}": one per tenant and process
    -- on a server.
    UNIQUE (server_id, tenant, process)
);
