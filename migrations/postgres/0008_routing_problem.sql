-- Why the router sends a server nothing whatever its status: its tenement
-- routes by another domain than slum's (tenants' Hosts would reach its own
-- dashboard and API), or that was not checked yet. NULL once a check passed.
-- Routing depends on it, so a change moves the routing version.
-- (The same change as migrations/sqlite/0008.)
ALTER TABLE servers ADD COLUMN routing_problem TEXT;
DROP TRIGGER servers_update_bumps ON servers;
CREATE TRIGGER servers_update_bumps AFTER UPDATE OF url, domain, status, routing_problem ON servers
    FOR EACH ROW
    WHEN (OLD.url IS DISTINCT FROM NEW.url
          OR OLD.domain IS DISTINCT FROM NEW.domain
          OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.routing_problem IS DISTINCT FROM NEW.routing_problem)
    EXECUTE FUNCTION bump_fleet_version();
