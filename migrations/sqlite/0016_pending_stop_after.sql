-- When a pending stop may be carried out (unix milliseconds): a move's old
-- copy finishes the requests it holds for the move's grace, and reconcile
-- leaves it alone until then. Rows from before are due at once.
ALTER TABLE pending_stops ADD COLUMN stop_after INTEGER NOT NULL DEFAULT 0;
