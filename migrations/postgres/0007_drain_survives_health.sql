-- A drain is the operator's, health the checks': a draining server that dies is
-- marked offline (so that its tenants fail over), and comes back draining, not
-- online. `drain` remembers the operator's intent while `status` says offline.
ALTER TABLE servers ADD COLUMN drain BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE servers SET drain = TRUE WHERE status = 'draining';
