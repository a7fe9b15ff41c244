import { openDatabase } from '/work/main/src/db/connection.ts';
import { verifyTenant } from '/work/main/src/audit/verify.ts';
const name = process.argv[2]!; const tenant = process.argv[3]!;
const readers = Number(process.argv[4] ?? 0) || undefined;
const d = await openDatabase({ databaseUrl: `postgres://guichet_bench_app@127.0.0.1:5432/${name}`, migrate: false });
for (let i = 0; i < 3; i++) {
  const c0 = process.cpuUsage(); const t0 = performance.now();
  const v = await verifyTenant(d.db, tenant, { readers, ...(process.env.PAGE ? { pageSize: Number(process.env.PAGE) } : {}) });
  const ms = performance.now() - t0; const c = process.cpuUsage(c0);
  console.log(v.ok, (Number(process.env.N ?? 200000) / ms * 1000).toFixed(0), 'events/s', 'node cpu', ((c.user + c.system) / 1000 / ms * 100).toFixed(0) + '%');
}
await d.close();
