-- Routers LISTEN on slum_fleet: every routing change notifies them at commit
-- (PostgreSQL folds identical notifications of one transaction into one), so
-- they reload within milliseconds instead of at their next poll.
CREATE OR REPLACE FUNCTION bump_fleet_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    PERFORM pg_notify('slum_fleet', '');
    RETURN NULL;
END;
$$;
