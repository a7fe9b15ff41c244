-- The owner (CLI: tenant creation, imports) works on tenant rows through the
-- same transaction as the application, which switches to guichet_app; a
-- non-superuser owner must therefore be a member of it.
GRANT guichet_app TO CURRENT_USER;
