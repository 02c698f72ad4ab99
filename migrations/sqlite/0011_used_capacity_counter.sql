-- Each server's used memory kept on its row: the sum of the memory of the
-- instances placed on it or moving to it (a moving instance counts on both
-- servers, once on each), moved by triggers on instances in the statement
-- that changes them. list_servers and the reservation checks read it instead
-- of summing the instances of every server (O(instances) per call).
--
-- The counter's updates touch no column the route change feed watches
-- (servers_update_feeds is AFTER UPDATE OF url, domain, status,
-- routing_problem): they are not routing changes.

ALTER TABLE servers ADD COLUMN used_mb INTEGER NOT NULL DEFAULT 0;

UPDATE servers SET used_mb = COALESCE((SELECT SUM(i.memory_mb) FROM instances i
                                       WHERE i.server_id = servers.id
                                          OR i.moving_to = servers.id), 0);

CREATE TRIGGER instances_insert_uses AFTER INSERT ON instances
WHEN NEW.memory_mb <> 0
BEGIN
    UPDATE servers SET used_mb = used_mb + NEW.memory_mb
    WHERE id IN (NEW.server_id, NEW.moving_to);
END;

CREATE TRIGGER instances_delete_frees AFTER DELETE ON instances
WHEN OLD.memory_mb <> 0
BEGIN
    UPDATE servers SET used_mb = used_mb - OLD.memory_mb
    WHERE id IN (OLD.server_id, OLD.moving_to);
END;

-- What each server held of the old row is taken off and what it holds of the
-- new one added; a server whose share did not change (the target of a move
-- that finishes) is not written.
CREATE TRIGGER instances_update_uses AFTER UPDATE OF memory_mb, server_id, moving_to ON instances
WHEN OLD.memory_mb IS NOT NEW.memory_mb OR OLD.server_id IS NOT NEW.server_id
     OR OLD.moving_to IS NOT NEW.moving_to
BEGIN
    UPDATE servers SET used_mb = used_mb
        - (CASE WHEN id IN (OLD.server_id, OLD.moving_to) THEN OLD.memory_mb ELSE 0 END)
        + (CASE WHEN id IN (NEW.server_id, NEW.moving_to) THEN NEW.memory_mb ELSE 0 END)
    WHERE id IN (OLD.server_id, OLD.moving_to, NEW.server_id, NEW.moving_to)
      AND (CASE WHEN id IN (OLD.server_id, OLD.moving_to) THEN OLD.memory_mb ELSE 0 END)
          <> (CASE WHEN id IN (NEW.server_id, NEW.moving_to) THEN NEW.memory_mb ELSE 0 END);
END;

-- Only the sum read this index (0006); the unique (server_id, tenant, process)
-- serves the lookups by server.
DROP INDEX instances_server_memory;
