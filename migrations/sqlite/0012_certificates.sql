-- HTTPS: the fleet's certificates, the ACME challenges being answered, and the
-- ACME account. Every router serves every certificate, so they live here and
-- reach the routers through the route change feed, one name at a time.
--
-- certificates: one row per name, an exact domain ('shop.example.com') or a
-- wildcard ('*.example.com', one label). An operator's upload ('uploaded') or
-- one the leading router orders ('acme'): cert_pem (the chain, leaf first),
-- key_pem, not_before and not_after (Unix seconds) are NULL until issued.
-- state is 'issued', 'pending' (no certificate yet) or 'failing' (the last
-- order failed: last_error is the CA's reason, failures how many in a row).
-- next_try (Unix seconds) is when the next order is due, NULL when none is;
-- ordering_router and claimed_until (Unix seconds) are the claim that makes
-- one order per name fleet-wide. redirect: NULL follows the fleet's default,
-- 0 or 1 overrides it. updated_at in Unix milliseconds, as elsewhere.
CREATE TABLE certificates (
    name            TEXT    PRIMARY KEY NOT NULL,
    source          TEXT    NOT NULL CHECK (source IN ('uploaded', 'acme')),
    cert_pem        TEXT,
    key_pem         TEXT,
    not_before      INTEGER,
    not_after       INTEGER,
    state           TEXT    NOT NULL CHECK (state IN ('issued', 'pending', 'failing')),
    last_error      TEXT,
    failures        INTEGER NOT NULL DEFAULT 0,
    next_try        INTEGER,
    ordering_router TEXT,
    claimed_until   INTEGER,
    redirect        INTEGER CHECK (redirect IN (0, 1)),
    updated_at      INTEGER NOT NULL
);
-- The orders due (WHERE next_try <= now ORDER BY next_try) and the
-- certificates near expiry (COUNT ... WHERE not_after < t) are index reads,
-- whatever the number of certificates.
CREATE INDEX certificates_next_try ON certificates (next_try) WHERE next_try IS NOT NULL;
CREATE INDEX certificates_not_after ON certificates (not_after) WHERE not_after IS NOT NULL;

-- HTTP-01: the key authorization any router answers at
-- /.well-known/acme-challenge/{token} for the domain.
CREATE TABLE acme_http01 (
    token             TEXT    PRIMARY KEY NOT NULL,
    domain            TEXT    NOT NULL,
    key_authorization TEXT    NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE INDEX acme_http01_domain ON acme_http01 (domain);

-- TLS-ALPN-01: the self-signed challenge certificate any router presents for
-- the domain to a client offering ALPN acme-tls/1.
CREATE TABLE acme_alpn01 (
    domain     TEXT    PRIMARY KEY NOT NULL,
    cert_pem   TEXT    NOT NULL,
    key_pem    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- The fleet's one ACME account: its directory URL and its credentials (a
-- secret, as JSON).
CREATE TABLE acme_account (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    directory   TEXT    NOT NULL,
    credentials TEXT    NOT NULL
);

-- The feed gets two kinds: 'certificate' (key: the name) and 'challenge' (key:
-- the domain). SQLite cannot change a CHECK, so the table is made again; the
-- triggers that write it name it, and find the new one. Renaming a table
-- would rewrite those triggers, so the entries go through a copy instead.
CREATE TEMP TABLE route_changes_copy AS SELECT seq, kind, key FROM route_changes;
DROP TABLE route_changes;
CREATE TABLE route_changes (
    seq  INTEGER PRIMARY KEY NOT NULL,
    kind TEXT    NOT NULL
         CHECK (kind IN ('server', 'domain', 'tenant', 'certificate', 'challenge')),
    key  TEXT    NOT NULL
);
INSERT INTO route_changes (seq, kind, key) SELECT seq, kind, key FROM route_changes_copy;
DROP TABLE route_changes_copy;

-- A router reads a certificate again when what it serves changes: the row
-- itself, its chain and key, or its redirect. Orders' bookkeeping (state,
-- next_try, claims, failures) is no routing change.
CREATE TRIGGER certificates_insert_feeds AFTER INSERT ON certificates
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'certificate', NEW.name FROM fleet_version WHERE id = 1;
END;
CREATE TRIGGER certificates_delete_feeds AFTER DELETE ON certificates
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'certificate', OLD.name FROM fleet_version WHERE id = 1;
END;
CREATE TRIGGER certificates_update_feeds AFTER UPDATE OF cert_pem, key_pem, redirect ON certificates
WHEN OLD.cert_pem IS NOT NEW.cert_pem OR OLD.key_pem IS NOT NEW.key_pem
     OR OLD.redirect IS NOT NEW.redirect
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'certificate', NEW.name FROM fleet_version WHERE id = 1;
END;

-- A router reads a domain's challenges again when one is added, replaced or
-- removed.
CREATE TRIGGER acme_http01_insert_feeds AFTER INSERT ON acme_http01
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'challenge', NEW.domain FROM fleet_version WHERE id = 1;
END;
CREATE TRIGGER acme_http01_delete_feeds AFTER DELETE ON acme_http01
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'challenge', OLD.domain FROM fleet_version WHERE id = 1;
END;
CREATE TRIGGER acme_http01_update_feeds AFTER UPDATE ON acme_http01
WHEN OLD.domain IS NOT NEW.domain OR OLD.key_authorization IS NOT NEW.key_authorization
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'challenge', NEW.domain FROM fleet_version WHERE id = 1;
    UPDATE fleet_version SET version = version + 1 WHERE id = 1 AND OLD.domain IS NOT NEW.domain;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'challenge', OLD.domain FROM fleet_version
        WHERE id = 1 AND OLD.domain IS NOT NEW.domain;
END;
CREATE TRIGGER acme_alpn01_insert_feeds AFTER INSERT ON acme_alpn01
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'challenge', NEW.domain FROM fleet_version WHERE id = 1;
END;
CREATE TRIGGER acme_alpn01_delete_feeds AFTER DELETE ON acme_alpn01
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'challenge', OLD.domain FROM fleet_version WHERE id = 1;
END;
CREATE TRIGGER acme_alpn01_update_feeds AFTER UPDATE OF cert_pem, key_pem ON acme_alpn01
WHEN OLD.cert_pem IS NOT NEW.cert_pem OR OLD.key_pem IS NOT NEW.key_pem
BEGIN
    UPDATE fleet_version SET version = version + 1 WHERE id = 1;
    INSERT INTO route_changes (seq, kind, key)
        SELECT version, 'challenge', NEW.domain FROM fleet_version WHERE id = 1;
END;
