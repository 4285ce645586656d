# airlock: build with the toolchain better-sqlite3 needs, run on a slim Node LTS image as a non-root user.
FROM node:20-bookworm AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY server ./server
COPY storage ./storage
COPY scripts ./scripts
COPY test ./test
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    AIRLOCK_CONFIG=/data/airlock.yaml
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/server ./dist/server
COPY --from=build /src/dist/storage ./dist/storage
RUN groupadd --system airlock && useradd --system --gid airlock --home /data airlock \
 && mkdir -p /data && chown airlock:airlock /data
USER airlock
WORKDIR /data
VOLUME ["/data"]
EXPOSE 5443
# /healthz needs a client certificate like every route; the check presents the admin bundle written by init.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD node -e "const fs=require('fs'),https=require('https');const d='/data/pki/clients/admin/';https.get({host:'127.0.0.1',port:5443,path:'/healthz',ca:fs.readFileSync(d+'ca.crt'),cert:fs.readFileSync(d+'client.cert'),key:fs.readFileSync(d+'client.key'),servername:'localhost'},r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"
# A 64 MiB initial old generation: see "Node's heap" in docs/operator-guide.md.
ENTRYPOINT ["node", "--initial-old-space-size=64", "/app/dist/server/main.js"]
CMD ["serve"]
