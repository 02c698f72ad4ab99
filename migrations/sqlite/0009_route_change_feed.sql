-- The route change feed: every change that matters to routing is recorded, in
-- the transaction that makes it, with its sequence number (the routing version
-- it moved fleet_version to) and what it names: a server (its url, domain,
-- status or routing problem), a customer domain (its tenant row), or a tenant
-- (the running instances of its processes). A router applies the entries after
-- the number it has seen, reading only what they name; one that finds a gap
-- (entries trimmed past it) rebuilds its table. Each change moves the version
-- by one, so the numbers have no holes.
CREATE TABLE route_changes (
    seq  INTEGER PRIMARY KEY NOT NULL,
    kind TEXT    NOT NULL CHECK (kind IN ('server', 'domain', 'tenant')),
    key  TEXT    NOT NULL
);

DROP TRIGGER servers_insert_bumps;
DROP TRIGGER servers_delete_bumps;
DROP TRIGGER servers_update_bumps;
DROP TRIGGER tenants_insert_bumps;
DROP TRIGGER tenants_delete_bumps;
DROP TRIGGER tenants_update_bumps;
DROP TRIGGER instances_insert_bumps;
DROP TRIGGER instances_delete_bumps;
DROP TRIGGER instances_update_bumps;

CREATE TRIGGER servers_insert_feeds AFTER INSERT ON servers
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'server', NEW.id FROM fleet_version WHERE id = 1;
END;
CREATE TRIGGER servers_delete_feeds AFTER DELETE ON servers
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'server', OLD.id FROM fleet_version WHERE id = 1;
END;
-- Only real changes: the health monitor writes status with every last_seen.
CREATE TRIGGER servers_update_feeds AFTER UPDATE OF url, domain, status, routing_problem ON servers
WHEN OLD.url IS NOT NEW.url OR OLD.domain IS NOT NEW.domain OR OLD.status IS NOT NEW.status
     OR OLD.routing_problem IS NOT NEW.routing_problem
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'server', NEW.id FROM fleet_version WHERE id = 1;
END;

CREATE TRIGGER tenants_insert_feeds AFTER INSERT ON tenants
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'domain', NEW.domain FROM fleet_version WHERE id = 1;
END;
CREATE TRIGGER tenants_delete_feeds AFTER DELETE ON tenants
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'domain', OLD.domain FROM fleet_version WHERE id = 1;
END;
CREATE TRIGGER tenants_update_feeds AFTER UPDATE OF domain, name, server_id, process, instance_id ON tenants
WHEN OLD.domain IS NOT NEW.domain OR OLD.name IS NOT NEW.name OR OLD.server_id IS NOT NEW.server_id
     OR OLD.process IS NOT NEW.process OR OLD.instance_id IS NOT NEW.instance_id
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'domain', NEW.domain FROM fleet_version WHERE id = 1;
    UPDATE fleet_version SET version = version + 1 WHERE id = 1 AND OLD.domain IS NOT NEW.domain;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'domain', OLD.domain FROM fleet_version
        WHERE id = 1 AND OLD.domain IS NOT NEW.domain;
END;

CREATE TRIGGER instances_insert_feeds AFTER INSERT ON instances
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'tenant', NEW.tenant FROM fleet_version WHERE id = 1;
END;
CREATE TRIGGER instances_delete_feeds AFTER DELETE ON instances
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'tenant', OLD.tenant FROM fleet_version WHERE id = 1;
END;
CREATE TRIGGER instances_update_feeds AFTER UPDATE OF tenant, server_id, process, desired ON instances
WHEN OLD.tenant IS NOT NEW.tenant OR OLD.server_id IS NOT NEW.server_id
     OR OLD.process IS NOT NEW.process OR OLD.desired IS NOT NEW.desired
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'tenant', NEW.tenant FROM fleet_version WHERE id = 1;
    UPDATE fleet_version SET version = version + 1 WHERE id = 1 AND OLD.tenant IS NOT NEW.tenant;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'tenant', OLD.tenant FROM fleet_version
        WHERE id = 1 AND OLD.tenant IS NOT NEW.tenant;
END;
