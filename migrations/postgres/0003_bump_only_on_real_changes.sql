-- An UPDATE OF trigger fires whenever the column is assigned, even to the same
-- value; the health monitor writes status with every last_seen, so only real
-- changes may move the routing version (each move makes routers reload).
-- (The same change as migrations/sqlite/0003.)
DROP TRIGGER servers_update_bumps ON servers;
CREATE TRIGGER servers_update_bumps AFTER UPDATE OF url, domain, status ON servers
    FOR EACH ROW
    WHEN (OLD.url IS DISTINCT FROM NEW.url
          OR OLD.domain IS DISTINCT FROM NEW.domain
          OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION bump_fleet_version();
