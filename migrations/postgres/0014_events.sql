-- The fleet's events: what happened to its servers, tenants and instances
-- (health transitions, spawns, stops, moves, drains, failovers, reconcile
-- actions, token and certificate changes), when, why (`cause`, a sentence),
-- and which router did it (`router`: its host:port and process id). Times in
-- Unix milliseconds, as elsewhere.
--
-- No references: an event outlives the server or tenant it names. Ids come
-- from an identity sequence, never given twice: followers page by id (WHERE
-- id > after ORDER BY id). Two routers' events may commit in another order
-- than their ids (a follower that must see each re-reads a few ids behind
-- its cursor). `tenant` is the tenant's name, `instance` its key
-- ('acme:prod').
CREATE TABLE events (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       BIGINT NOT NULL,
    kind     TEXT   NOT NULL,
    server   TEXT COLLATE "C",
    tenant   TEXT COLLATE "C",
    instance TEXT COLLATE "C",
    cause    TEXT   NOT NULL,
    router   TEXT   NOT NULL
);
-- One server's or one tenant's events, by id, and those since a time (and
-- the oldest, which the leader trims): each an index walk, whatever the
-- number of events.
CREATE INDEX events_server ON events (server, id) WHERE server IS NOT NULL;
CREATE INDEX events_tenant ON events (tenant, id) WHERE tenant IS NOT NULL;
CREATE INDEX events_at ON events (at, id);
