-- An UPDATE OF trigger fires whenever the column is assigned, even to the same
-- value; the health monitor writes status with every last_seen, so only real
-- changes may move the routing version (each move makes routers reload).
DROP TRIGGER servers_update_bumps;
CREATE TRIGGER servers_update_bumps AFTER UPDATE OF url, domain, status ON servers
WHEN OLD.url IS NOT NEW.url OR OLD.domain IS NOT NEW.domain OR OLD.status IS NOT NEW.status
BEGIN UPDATE fleet_version SET version = version + 1 WHERE id = 1; END;
