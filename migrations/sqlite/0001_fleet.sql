-- The fleet: servers, the customer domains routed to them, and the instances
-- placed on them. Times are Unix milliseconds (UTC).

CREATE TABLE servers (
    id          TEXT    PRIMARY KEY NOT NULL,
    url         TEXT    NOT NULL,
    region      TEXT,
    capacity_mb INTEGER NOT NULL CHECK (capacity_mb >= 0),
    token       TEXT,
    domain      TEXT,
    status      TEXT    NOT NULL DEFAULT 'unknown'
                CHECK (status IN ('unknown', 'online', 'offline', 'draining')),
    last_seen   INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX servers_region ON servers (region);

CREATE TABLE tenants (
    domain      TEXT    PRIMARY KEY NOT NULL,
    name        TEXT    NOT NULL,
    server_id   TEXT    NOT NULL REFERENCES servers (id) ON DELETE RESTRICT ON UPDATE RESTRICT,
    process     TEXT    NOT NULL,
    instance_id TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX tenants_server ON tenants (server_id);
CREATE INDEX tenants_name ON tenants (name);

CREATE TABLE instances (
    tenant      TEXT    NOT NULL,
    instance_id TEXT    NOT NULL,
    process     TEXT    NOT NULL,
    server_id   TEXT    NOT NULL REFERENCES servers (id) ON DELETE RESTRICT ON UPDATE RESTRICT,
    memory_mb   INTEGER NOT NULL CHECK (memory_mb >= 0),
    desired     TEXT    NOT NULL DEFAULT 'running' CHECK (desired IN ('running', 'stopped')),
    observed    TEXT    NOT NULL DEFAULT 'unknown',
    observed_at INTEGER,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, instance_id),
    -- tenement names an instance "{process}:{tenant}": one per tenant and process
    -- on a server.
    UNIQUE (server_id, tenant, process)
);
