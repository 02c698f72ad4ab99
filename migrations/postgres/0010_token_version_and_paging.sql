-- api_token_version moves whenever a management API token is created or
-- revoked, in the transaction that does it (a row, not a sequence, so that the
-- new version is visible together with the change). Each `slum serve` keeps
-- the token hashes in memory and reads this one row per API call: when it
-- moved (another router, or `slum token reset`), the hashes are read again.
CREATE TABLE api_token_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT  NOT NULL
);
INSERT INTO api_token_version (id, version) VALUES (1, 0);

CREATE FUNCTION bump_api_token_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE api_token_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_tokens_insert_bumps AFTER INSERT ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION bump_api_token_version();
CREATE TRIGGER api_tokens_delete_bumps AFTER DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION bump_api_token_version();
CREATE TRIGGER api_tokens_update_bumps AFTER UPDATE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION bump_api_token_version();

-- Paged lists of one server's records walk these in key order
-- (WHERE server_id = $1 AND key > $2 ORDER BY key LIMIT n) without sorting.
CREATE INDEX tenants_server_domain ON tenants (server_id, domain);
CREATE INDEX instances_server_key ON instances (server_id, tenant, instance_id);

-- (SQLite's 0010 makes its index of moves partial, as this one is since 0004.)
