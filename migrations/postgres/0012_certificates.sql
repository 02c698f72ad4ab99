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
-- one order per name fleet-wide (a conditional UPDATE of the row: of two
-- routers, the second finds the claim taken). redirect: NULL follows the
-- fleet's default, false or true overrides it. updated_at in Unix
-- milliseconds, as elsewhere.
CREATE TABLE certificates (
    name            TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    source          TEXT    NOT NULL CHECK (source IN ('uploaded', 'acme')),
    cert_pem        TEXT,
    key_pem         TEXT,
    not_before      BIGINT,
    not_after       BIGINT,
    state           TEXT    NOT NULL CHECK (state IN ('issued', 'pending', 'failing')),
    last_error      TEXT,
    failures        BIGINT  NOT NULL DEFAULT 0,
    next_try        BIGINT,
    ordering_router TEXT,
    claimed_until   BIGINT,
    redirect        BOOLEAN,
    updated_at      BIGINT  NOT NULL
);
-- The orders due (WHERE next_try <= now ORDER BY next_try) and the
-- certificates near expiry (COUNT ... WHERE not_after < t) are index reads,
-- whatever the number of certificates.
CREATE INDEX certificates_next_try ON certificates (next_try) WHERE next_try IS NOT NULL;
CREATE INDEX certificates_not_after ON certificates (not_after) WHERE not_after IS NOT NULL;

-- HTTP-01: the key authorization any router answers at
-- /.well-known/acme-challenge/{token} for the domain.
CREATE TABLE acme_http01 (
    token             TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    domain            TEXT COLLATE "C" NOT NULL,
    key_authorization TEXT   NOT NULL,
    created_at        BIGINT NOT NULL
);
CREATE INDEX acme_http01_domain ON acme_http01 (domain);

-- TLS-ALPN-01: the self-signed challenge certificate any router presents for
-- the domain to a client offering ALPN acme-tls/1.
CREATE TABLE acme_alpn01 (
    domain     TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    cert_pem   TEXT   NOT NULL,
    key_pem    TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

-- The fleet's one ACME account: its directory URL and its credentials (a
-- secret, as JSON).
CREATE TABLE acme_account (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    directory   TEXT NOT NULL,
    credentials TEXT NOT NULL
);

-- The feed gets two kinds: 'certificate' (key: the name) and 'challenge' (key:
-- the domain).
ALTER TABLE route_changes DROP CONSTRAINT route_changes_kind_check;
ALTER TABLE route_changes ADD CONSTRAINT route_changes_kind_check
    CHECK (kind IN ('server', 'domain', 'tenant', 'certificate', 'challenge'));

CREATE FUNCTION certificates_feed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM feed_route_change('certificate', OLD.name);
    ELSE
        PERFORM feed_route_change('certificate', NEW.name);
    END IF;
    RETURN NULL;
END;
$$;

-- Both challenge tables have a `domain`.
CREATE FUNCTION challenges_feed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        PERFORM feed_route_change('challenge', NEW.domain);
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.domain IS DISTINCT FROM NEW.domain) THEN
        PERFORM feed_route_change('challenge', OLD.domain);
    END IF;
    RETURN NULL;
END;
$$;

-- A router reads a certificate again when what it serves changes: the row
-- itself, its chain and key, or its redirect. Orders' bookkeeping (state,
-- next_try, claims, failures) is no routing change.
CREATE TRIGGER certificates_feeds AFTER INSERT OR DELETE ON certificates
    FOR EACH ROW EXECUTE FUNCTION certificates_feed();
CREATE TRIGGER certificates_update_feeds AFTER UPDATE ON certificates
    FOR EACH ROW
    WHEN (OLD.cert_pem IS DISTINCT FROM NEW.cert_pem
          OR OLD.key_pem IS DISTINCT FROM NEW.key_pem
          OR OLD.redirect IS DISTINCT FROM NEW.redirect)
    EXECUTE FUNCTION certificates_feed();

-- A router reads a domain's challenges again when one is added, replaced or
-- removed.
CREATE TRIGGER acme_http01_feeds AFTER INSERT OR DELETE ON acme_http01
    FOR EACH ROW EXECUTE FUNCTION challenges_feed();
CREATE TRIGGER acme_http01_update_feeds AFTER UPDATE ON acme_http01
    FOR EACH ROW
    WHEN (OLD.domain IS DISTINCT FROM NEW.domain
          OR OLD.key_authorization IS DISTINCT FROM NEW.key_authorization)
    EXECUTE FUNCTION challenges_feed();
CREATE TRIGGER acme_alpn01_feeds AFTER INSERT OR DELETE ON acme_alpn01
    FOR EACH ROW EXECUTE FUNCTION challenges_feed();
CREATE TRIGGER acme_alpn01_update_feeds AFTER UPDATE ON acme_alpn01
    FOR EACH ROW
    WHEN (OLD.cert_pem IS DISTINCT FROM NEW.cert_pem OR OLD.key_pem IS DISTINCT FROM NEW.key_pem)
    EXECUTE FUNCTION challenges_feed();
