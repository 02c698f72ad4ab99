-- Why the router sends a server nothing whatever its status: its tenement
-- routes by another domain than slum's (tenants' Hosts would reach its own
-- dashboard and API), or that was not checked yet. NULL once a check passed.
-- Routing depends on it, so a change moves the routing version.
ALTER TABLE servers ADD COLUMN routing_problem TEXT;
DROP TRIGGER servers_update_bumps;
CREATE TRIGGER servers_update_bumps AFTER UPDATE OF url, domain, status, routing_problem ON servers
WHEN OLD.url IS NOT NEW.url OR OLD.domain IS NOT NEW.domain OR OLD.status IS NOT NEW.status
     OR OLD.routing_problem IS NOT NEW.routing_problem
BEGIN UPDATE fleet_version SET version = version + 1 WHERE id = 1; END;
