-- Each server's used memory kept on its row: the sum of the memory of the
-- instances placed on it or moving to it (a moving instance counts on both
-- servers, once on each), moved by triggers on instances in the transaction
-- that changes them. list_servers and the reservation checks read it instead
-- of summing the instances of every server (O(instances) per call).
--
-- Every change of the counter updates the server's row, so it takes the row
-- lock a reservation takes first (FOR NO KEY UPDATE): a reservation that holds
-- it reads a counter nobody can move until it commits. The counter's updates
-- touch no column the route change feed watches (servers_update_feeds is
-- AFTER UPDATE OF url, domain, status, routing_problem).

-- No instance changes between the sum below and the triggers taking over.
LOCK TABLE servers, instances IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE servers ADD COLUMN used_mb BIGINT NOT NULL DEFAULT 0;

UPDATE servers s SET used_mb = COALESCE((SELECT SUM(i.memory_mb) FROM instances i
                                         WHERE i.server_id = s.id OR i.moving_to = s.id), 0);

CREATE FUNCTION instances_use_servers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE servers SET used_mb = used_mb + NEW.memory_mb
        WHERE id IN (NEW.server_id, NEW.moving_to) AND NEW.memory_mb <> 0;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE servers SET used_mb = used_mb - OLD.memory_mb
        WHERE id IN (OLD.server_id, OLD.moving_to) AND OLD.memory_mb <> 0;
    ELSE
        -- What each server held of the old row is taken off and what it holds
        -- of the new one added; a server whose share did not change (the
        -- target of a move that finishes) is not written, nor locked.
        UPDATE servers SET used_mb = used_mb
            - (CASE WHEN id IN (OLD.server_id, OLD.moving_to) THEN OLD.memory_mb ELSE 0 END)
            + (CASE WHEN id IN (NEW.server_id, NEW.moving_to) THEN NEW.memory_mb ELSE 0 END)
        WHERE id IN (OLD.server_id, OLD.moving_to, NEW.server_id, NEW.moving_to)
          AND (CASE WHEN id IN (OLD.server_id, OLD.moving_to) THEN OLD.memory_mb ELSE 0 END)
              <> (CASE WHEN id IN (NEW.server_id, NEW.moving_to) THEN NEW.memory_mb ELSE 0 END);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER instances_use_servers AFTER INSERT OR DELETE ON instances
    FOR EACH ROW EXECUTE FUNCTION instances_use_servers();
CREATE TRIGGER instances_update_use_servers AFTER UPDATE OF memory_mb, server_id, moving_to ON instances
    FOR EACH ROW
    WHEN (OLD.memory_mb IS DISTINCT FROM NEW.memory_mb
          OR OLD.server_id IS DISTINCT FROM NEW.server_id
          OR OLD.moving_to IS DISTINCT FROM NEW.moving_to)
    EXECUTE FUNCTION instances_use_servers();

-- Only the sum read this index (0006); the unique (server_id, tenant, process)
-- serves the lookups by server.
DROP INDEX instances_server_memory;
