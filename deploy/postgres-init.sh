#!/usr/bin/env bash
# First start of an empty PostgreSQL data directory (docker-entrypoint-initdb.d):
# - guichet_owner owns the database and runs the migrations (DATABASE_OWNER_URL);
# - guichet_app is the group role the migrations grant the tables to; it is
#   created here, by the owner (who must administer it), so that the login
#   role can join it before the first migration;
# - guichet_web is the application's login role (DATABASE_URL): neither
#   superuser nor owner, so row-level security applies to it — `guichet serve`
#   refuses to start otherwise;
# - guichet_keyring, owned by guichet_keys, holds the wrapped keys
#   (GUICHET_KEYRING_URL). In production put it on another cluster than the
#   data, so that a backup of the data never carries the keys.
set -euo pipefail

secret() { tr -d '\n' < "/run/secrets/$1"; }
owner_pw=$(secret owner_password)
web_pw=$(secret web_password)
keys_pw=$(secret keys_password)

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_pw="$owner_pw" -v web_pw="$web_pw" -v keys_pw="$keys_pw" <<'SQL'
CREATE ROLE guichet_owner LOGIN CREATEROLE PASSWORD :'owner_pw';
-- Created by the owner, which thereby administers it: migration 0003 grants it to the owner.
SET ROLE guichet_owner;
CREATE ROLE guichet_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
RESET ROLE;
CREATE ROLE guichet_web LOGIN PASSWORD :'web_pw' NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS IN ROLE guichet_app;
CREATE ROLE guichet_keys LOGIN PASSWORD :'keys_pw' NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
CREATE DATABASE guichet OWNER guichet_owner;
CREATE DATABASE guichet_keyring OWNER guichet_keys;
REVOKE ALL ON DATABASE guichet FROM PUBLIC;
GRANT CONNECT ON DATABASE guichet TO guichet_web;
REVOKE ALL ON DATABASE guichet_keyring FROM PUBLIC;
SQL
