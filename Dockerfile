# Guichet: one image for `guichet serve` and `guichet worker`.
# Guichet runs its TypeScript sources through tsx (a runtime dependency), so
# the image holds the sources as reviewed and the production dependencies
# only; no build step, no dev dependencies.
FROM node:20-slim

ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    GUICHET_DATA_DIR=/var/lib/guichet \
    NPM_CONFIG_UPDATE_NOTIFIER=false

WORKDIR /app

COPY package.json package-lock.json ./
# The lock file decides every version; prebuilt binaries (argon2) come inside their npm packages.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# tsconfig.json is read at run time: tsx takes the JSX settings (Preact) from it.
COPY tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY seed-data ./seed-data

# Not root: the sources and dependencies belong to root and are read-only to
# the process; only the data directory (witness file, local files) is its own.
# A named volume mounted on witness/ starts with this ownership.
RUN groupadd --system --gid 10001 guichet \
 && useradd --system --uid 10001 --gid guichet --home-dir /var/lib/guichet --shell /usr/sbin/nologin guichet \
 && mkdir -p /var/lib/guichet/witness \
 && chown -R guichet:guichet /var/lib/guichet \
 && chmod 0700 /var/lib/guichet
USER guichet:guichet
VOLUME ["/var/lib/guichet"]

EXPOSE 3000
# node:20-slim has no curl: node itself asks the readiness probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

# The signals reach node directly (exec form): SIGTERM stops the server or worker cleanly.
ENTRYPOINT ["node", "bin/guichet.mjs"]
CMD ["serve"]
