-- api_token_version moves whenever a management API token is created or
-- revoked, in the transaction that does it. Each `slum serve` keeps the token
-- hashes in memory and reads this one row per API call: when it moved (another
-- router, or `slum token reset` on the file), the hashes are read again.
CREATE TABLE api_token_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO api_token_version (id, version) VALUES (1, 0);

CREATE TRIGGER api_tokens_insert_bumps AFTER INSERT ON api_tokens
BEGIN UPDATE api_token_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER api_tokens_delete_bumps AFTER DELETE ON api_tokens
BEGIN UPDATE api_token_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER api_tokens_update_bumps AFTER UPDATE ON api_tokens
BEGIN UPDATE api_token_version SET version = version + 1 WHERE id = 1; END;

-- Paged lists of one server's records walk these in key order
-- (WHERE server_id = ? AND key > ? ORDER BY key LIMIT n) without sorting.
CREATE INDEX tenants_server_domain ON tenants (server_id, domain);
CREATE INDEX instances_server_key ON instances (server_id, tenant, instance_id);

-- Only moving instances in the index of moves, as on PostgreSQL: once ANALYZE
-- has seen the column NULL almost everywhere, SQLite judged an index of every
-- row useless and scanned every instance to find those moving to a server.
DROP INDEX instances_moving_to;
CREATE INDEX instances_moving_to ON instances (moving_to) WHERE moving_to IS NOT NULL;
