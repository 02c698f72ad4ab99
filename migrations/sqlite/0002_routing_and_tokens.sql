-- fleet_version counts changes that matter to routing; routers poll it and
-- reload their in-memory route table when it moves. Health bookkeeping
-- (last_seen, observed states) does not count.
CREATE TABLE fleet_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO fleet_version (id, version) VALUES (1, 0);

CREATE TRIGGER servers_insert_bumps AFTER INSERT ON servers
BEGIN UPDATE fleet_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER servers_delete_bumps AFTER DELETE ON servers
BEGIN UPDATE fleet_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER servers_update_bumps AFTER UPDATE OF url, domain, status ON servers
BEGIN UPDATE fleet_version SET version = version + 1 WHERE id = 1; END;

CREATE TRIGGER tenants_insert_bumps AFTER INSERT ON tenants
BEGIN UPDATE fleet_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER tenants_delete_bumps AFTER DELETE ON tenants
BEGIN UPDATE fleet_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER tenants_update_bumps AFTER UPDATE ON tenants
BEGIN UPDATE fleet_version SET version = version + 1 WHERE id = 1; END;

CREATE TRIGGER instances_insert_bumps AFTER INSERT ON instances
BEGIN UPDATE fleet_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER instances_delete_bumps AFTER DELETE ON instances
BEGIN UPDATE fleet_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER instances_update_bumps AFTER UPDATE OF server_id, process, desired ON instances
BEGIN UPDATE fleet_version SET version = version + 1 WHERE id = 1; END;

-- Management API tokens: only a SHA-256 hash of each is stored.
CREATE TABLE api_tokens (
    id         TEXT    PRIMARY KEY NOT NULL,
    name       TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
