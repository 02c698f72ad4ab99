-- PostgreSQL's 0005 makes routing changes notify the routers listening on the
-- database. SQLite has no notifications (one router per database file, which
-- polls the routing version); this version keeps the two schemas in step.
SELECT 1;
