#!/bin/sh
# An SQL injection scan of every route with sqlmap, with signed-in sessions for each role.
# See scripts/sqlmap.ts for what it does; options: --level N --risk N --technique BEUST --roles parent,staff,director,operator,officer,admin --every-role --only REGEX --plan.
set -eu
command -v "${SQLMAP:-/usr/bin/sqlmap}" >/dev/null || { echo "sqlmap is not installed (Debian: apt-get install sqlmap)" >&2; exit 2; }
cd "$(dirname "$0")/.."
exec node bin/run-ts.mjs scripts/sqlmap.ts --sqlmap "${SQLMAP:-/usr/bin/sqlmap}" "$@"
