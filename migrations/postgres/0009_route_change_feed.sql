-- The route change feed: every change that matters to routing is recorded, in
-- the transaction that makes it, with its sequence number (the routing version
-- it moved fleet_version to) and what it names: a server (its url, domain,
-- status or routing problem), a customer domain (its tenant row), or a tenant
-- (the running instances of its processes). A router applies the entries after
-- the number it has seen, reading only what they name; one that finds a gap
-- (entries trimmed past it) rebuilds its table.
--
-- The number is taken by updating fleet_version's one row, whose lock the
-- transaction then holds until it ends: routing changes commit one at a time
-- in the order of their numbers, so a reader never sees number n+1 before n,
-- and a rolled-back change gives its number back.
CREATE TABLE route_changes (
    seq  BIGINT PRIMARY KEY NOT NULL,
    kind TEXT   NOT NULL CHECK (kind IN ('server', 'domain', 'tenant')),
    key  TEXT COLLATE "C" NOT NULL
);

CREATE FUNCTION feed_route_change(change_kind TEXT, change_key TEXT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1 RETURNING version INTO n;
    INSERT INTO route_changes (seq, kind, key) VALUES (n, change_kind, change_key);
    PERFORM pg_notify('slum_fleet', '');
END;
$$;

CREATE FUNCTION servers_feed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM feed_route_change('server', OLD.id);
    ELSE
        PERFORM feed_route_change('server', NEW.id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION tenants_feed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        PERFORM feed_route_change('domain', NEW.domain);
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.domain IS DISTINCT FROM NEW.domain) THEN
        PERFORM feed_route_change('domain', OLD.domain);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION instances_feed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        PERFORM feed_route_change('tenant', NEW.tenant);
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.tenant IS DISTINCT FROM NEW.tenant) THEN
        PERFORM feed_route_change('tenant', OLD.tenant);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER servers_insert_bumps ON servers;
DROP TRIGGER servers_delete_bumps ON servers;
DROP TRIGGER servers_update_bumps ON servers;
DROP TRIGGER tenants_insert_bumps ON tenants;
DROP TRIGGER tenants_delete_bumps ON tenants;
DROP TRIGGER tenants_update_bumps ON tenants;
DROP TRIGGER instances_insert_bumps ON instances;
DROP TRIGGER instances_delete_bumps ON instances;
DROP TRIGGER instances_update_bumps ON instances;

CREATE TRIGGER servers_feeds AFTER INSERT OR DELETE ON servers
    FOR EACH ROW EXECUTE FUNCTION servers_feed();
-- Only real changes: the health monitor writes status with every last_seen.
CREATE TRIGGER servers_update_feeds AFTER UPDATE OF url, domain, status, routing_problem ON servers
    FOR EACH ROW
    WHEN (OLD.url IS DISTINCT FROM NEW.url
          OR OLD.domain IS DISTINCT FROM NEW.domain
          OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.routing_problem IS DISTINCT FROM NEW.routing_problem)
    EXECUTE FUNCTION servers_feed();

CREATE TRIGGER tenants_feeds AFTER INSERT OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_feed();
CREATE TRIGGER tenants_update_feeds AFTER UPDATE ON tenants
    FOR EACH ROW
    WHEN (OLD.domain IS DISTINCT FROM NEW.domain
          OR OLD.name IS DISTINCT FROM NEW.name
          OR OLD.server_id IS DISTINCT FROM NEW.server_id
          OR OLD.process IS DISTINCT FROM NEW.process
          OR OLD.instance_id IS DISTINCT FROM NEW.instance_id)
    EXECUTE FUNCTION tenants_feed();

CREATE TRIGGER instances_feeds AFTER INSERT OR DELETE ON instances
    FOR EACH ROW EXECUTE FUNCTION instances_feed();
CREATE TRIGGER instances_update_feeds AFTER UPDATE ON instances
    FOR EACH ROW
    WHEN (OLD.tenant IS DISTINCT FROM NEW.tenant
          OR OLD.server_id IS DISTINCT FROM NEW.server_id
          OR OLD.process IS DISTINCT FROM NEW.process
          OR OLD.desired IS DISTINCT FROM NEW.desired)
    EXECUTE FUNCTION instances_feed();

DROP FUNCTION bump_fleet_version();
