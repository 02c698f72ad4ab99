-- Failover policy per tenant, moves between servers, and stops of old copies
-- that wait for their server to answer.

ALTER TABLE tenants ADD COLUMN failover TEXT COLLATE "C" NOT NULL DEFAULT 'none'
    CHECK (failover IN ('none', 'respawn'));

-- While an instance moves, its memory is reserved on the target as well.
ALTER TABLE instances ADD COLUMN moving_to TEXT COLLATE "C" REFERENCES servers (id) ON DELETE RESTRICT;
CREATE INDEX instances_moving_to ON instances (moving_to) WHERE moving_to IS NOT NULL;

-- An old copy left on a server after a move, to stop once the server answers.
CREATE TABLE pending_stops (
    server_id  TEXT   COLLATE "C" NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    name       TEXT   COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (server_id, name)
);
