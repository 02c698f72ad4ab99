-- fleet_version counts changes that matter to routing; routers poll it and
-- reload their in-memory route table when it moves. Health bookkeeping
-- (last_seen, observed states) does not count.
--
-- The counter is a row updated inside the writing transaction (not a sequence),
-- so a new version becomes visible together with the change it counts: a router
-- that reads version N and then the fleet never misses what N stands for. The
-- same trigger function is the place for a NOTIFY to routers (delivered at
-- commit) when they stop polling.
CREATE TABLE fleet_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT  NOT NULL
);
INSERT INTO fleet_version (id, version) VALUES (1, 0);

CREATE FUNCTION bump_fleet_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;

-- One bump per changed row, as SQLite's (always per-row) triggers do.
CREATE TRIGGER servers_insert_bumps AFTER INSERT ON servers
    FOR EACH ROW EXECUTE FUNCTION bump_fleet_version();
CREATE TRIGGER servers_delete_bumps AFTER DELETE ON servers
    FOR EACH ROW EXECUTE FUNCTION bump_fleet_version();
CREATE TRIGGER servers_update_bumps AFTER UPDATE OF url, domain, status ON servers
    FOR EACH ROW EXECUTE FUNCTION bump_fleet_version();

CREATE TRIGGER tenants_insert_bumps AFTER INSERT ON tenants
    FOR EACH ROW EXECUTE FUNCTION bump_fleet_version();
CREATE TRIGGER tenants_delete_bumps AFTER DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION bump_fleet_version();
CREATE TRIGGER tenants_update_bumps AFTER UPDATE ON tenants
    FOR EACH ROW EXECUTE FUNCTION bump_fleet_version();

CREATE TRIGGER instances_insert_bumps AFTER INSERT ON instances
    FOR EACH ROW EXECUTE FUNCTION bump_fleet_version();
CREATE TRIGGER instances_delete_bumps AFTER DELETE ON instances
    FOR EACH ROW EXECUTE FUNCTION bump_fleet_version();
CREATE TRIGGER instances_update_bumps AFTER UPDATE OF server_id, process, desired ON instances
    FOR EACH ROW EXECUTE FUNCTION bump_fleet_version();

-- Management API tokens: only a SHA-256 hash of each is stored.
CREATE TABLE api_tokens (
    id         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    hash       TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
