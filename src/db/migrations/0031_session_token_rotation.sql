-- A re-authentication (step-up) gives its session a new token (ASVS 7.2.4):
-- the copy of a token taken before it stops working, and never carries the
-- fresh authentication. The session keeps its row (its id, which the CSRF
-- token, a break-glass and an assisted session are bound to); only the hash
-- of its token changes, with its authentication time.
GRANT UPDATE (token_hash) ON sessions TO guichet_app;
