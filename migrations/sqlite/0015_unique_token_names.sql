-- A token's name is its label (`ci`, `deploy`, the admin token's `admin`):
-- unique, so that `slum token list` tells tokens apart and a revocation by
-- name could never hit two. Names given twice before are told apart first:
-- every one but the oldest gets its id after it.
UPDATE api_tokens SET name = name || ' (' || id || ')'
WHERE EXISTS (
    SELECT 1 FROM api_tokens o
    WHERE o.name = api_tokens.name
      AND (o.created_at < api_tokens.created_at
           OR (o.created_at = api_tokens.created_at AND o.id < api_tokens.id))
);
CREATE UNIQUE INDEX api_tokens_name ON api_tokens (name);
