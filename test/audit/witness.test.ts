/**
 * Witnesses and the security console: the sealer speaks c2sp.org/tlog-witness
 * to a real local HTTP witness, which checks every consistency proof and so
 * refuses a rewritten log; the console page shows the latest head and whether
 * the witness file's copy agrees, to security officers and administrators
 * only.
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Actor } from '../../src/access/actor.ts';
import { appendAudit } from '../../src/audit/log.ts';
import { verifyConsistency } from '../../src/audit/merkle.ts';
import { auditConsole } from '../../src/audit/routes.tsx';
import { Sealer } from '../../src/audit/sealer.ts';
import { TenantSigner } from '../../src/audit/signing.ts';
import { openCheckpoint, VerifyError, type VerifierKey } from '../../src/audit/verify-bundle.ts';
import { witnessConfig, witnessRecord } from '../../src/audit/witness.ts';
import { ConfigError } from '../../src/config/config.ts';
import { AppError } from '../../src/errors.ts';
import { inTenant } from '../../src/db/tenant.ts';
import { createAdmin, createParent, ctxFor, PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client, textOf } from '../helpers/client.ts';
import { createTestDatabase, createTestTenant, type TestDatabase } from '../helpers/db.ts';

let t: TestDatabase;
let dir: string;

beforeAll(async () => {
  t = await createTestDatabase();
  dir = mkdtempSync(join(tmpdir(), 'guichet-audit-witness-'));
});
afterAll(async () => {
  await t?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function append(tenantId: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await inTenant(t.db, tenantId, (trx) => appendAudit(trx, tenantId, { action: 'demo.seed', outcome: 'success', actorAccountId: randomUUID(), details: { i } }, new Date()));
  }
}

/**
 * A tlog-witness (add-checkpoint) for one log: it trusts one key, keeps the
 * latest size and root, and checks each request as the spec says.
 */
function startWitness(key: VerifierKey): Promise<{ url: string; server: Server; state: { size: number; root: Buffer | null; requests: string[] } }> {
  const state = { size: 0, root: null as Buffer | null, requests: [] as string[] };
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const answer = (status: number, text: string, type = 'text/plain') => {
        state.requests.push(`${status}`);
        res.writeHead(status, { 'content-type': type }).end(text);
      };
      const split = body.indexOf('\n\n');
      const head = body.slice(0, split).split('\n');
      const m = /^old (\d+)$/.exec(head[0] ?? '');
      if (req.method !== 'POST' || !m || split < 0) return answer(400, 'bad request');
      const old = Number(m[1]);
      const proof = head.slice(1).map((l) => Buffer.from(l, 'base64'));
      let cp;
      try {
        cp = openCheckpoint(body.slice(split + 2), key);
      } catch (err) {
        return answer(err instanceof VerifyError && /unknown key/.test(err.message) ? 403 : 400, 'bad checkpoint');
      }
      if (cp.origin !== key.name) return answer(404, 'unknown log');
      if (old > cp.size) return answer(400, 'old > size');
      if (old !== state.size) return answer(409, `${state.size}\n`, 'text/x.tlog.size');
      if (old === cp.size) {
        if (state.root && !state.root.equals(cp.root)) return answer(409, 'same size, other root');
      } else if (old > 0 && !verifyConsistency(old, cp.size, proof, state.root!, cp.root)) {
        return answer(422, 'bad proof');
      }
      state.size = cp.size;
      state.root = cp.root;
      answer(200, `\u2014 witness.test/w1 ${Buffer.alloc(72, 7).toString('base64')}\n`);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/add-checkpoint`, server, state })));
}

describe('the HTTP witness (c2sp.org/tlog-witness)', () => {
  it('gets every head with a consistency proof, learns its size from a 409, and refuses a rewritten log', async () => {
    const keys = (await import('../../src/crypto/keys.ts')).keyProviderFromSecret(Buffer.alloc(32, 31));
    const { id } = await createTestTenant(t);
    const signer = new TenantSigner(keys, id);
    const w = await startWitness(signer.verifier);
    const problems: string[] = [];
    const log = pino({ level: 'warn' }, { write: (s: string) => problems.push(JSON.parse(s).msg as string) });
    try {
      const s1 = new Sealer(t.db, keys, log, { witness: { file: null, url: w.url } });
      await append(id, 3);
      await s1.sealTenant(id);
      await s1.httpWitness!.settle();
      expect(w.state.size).toBe(3);
      await append(id, 4);
      await s1.sealTenant(id);
      await s1.httpWitness!.settle();
      expect(w.state.size).toBe(7);
      expect(s1.httpWitness!.states.get(id)).toMatchObject({ state: 'ok', size: 7, cosignature: expect.stringMatching(/^\u2014 witness\.test\/w1 /) });

      // A new process does not know the witness's size: the witness tells it (409), and it proves from there.
      const s2 = new Sealer(t.db, keys, log, { witness: { file: null, url: w.url } });
      await append(id, 2);
      await s2.sealTenant(id);
      await s2.httpWitness!.settle();
      expect(w.state.size).toBe(9);
      expect(w.state.requests.slice(-2)).toEqual(['409', '200']);

      // History rewritten and re-signed with the real key: the witness refuses the next head.
      await t.ownerDb().transaction().execute(async (trx) => {
        for (const x of ['audit_events', 'audit_leaves', 'audit_tree_nodes', 'audit_tree_heads']) await sql`ALTER TABLE ${sql.table(x)} DISABLE TRIGGER USER`.execute(trx);
        await sql`UPDATE audit_events SET outcome = 'failure' WHERE tenant_id = ${id} AND details->>'i' = '1'`.execute(trx);
        for (const x of ['audit_leaves', 'audit_tree_nodes', 'audit_tree_heads']) await sql`DELETE FROM ${sql.table(x)} WHERE tenant_id = ${id}`.execute(trx);
        for (const x of ['audit_events', 'audit_leaves', 'audit_tree_nodes', 'audit_tree_heads']) await sql`ALTER TABLE ${sql.table(x)} ENABLE TRIGGER USER`.execute(trx);
      });
      await append(id, 1);
      await s2.sealTenant(id);
      await s2.httpWitness!.settle();
      expect(w.state.size).toBe(9);
      expect(w.state.requests.at(-1)).toBe('422');
      expect(s2.httpWitness!.states.get(id)).toMatchObject({ state: 'error', message: expect.stringMatching(/refused the consistency proof/) });
      expect(problems.some((p) => /audit witness: refused the consistency proof/.test(p))).toBe(true);
    } finally {
      w.server.close();
    }
  });

  it('a witness that is down is retried with the next heads, and the failure is visible', async () => {
    const keys = (await import('../../src/crypto/keys.ts')).keyProviderFromSecret(Buffer.alloc(32, 32));
    const { id } = await createTestTenant(t);
    const s = new Sealer(t.db, keys, pino({ level: 'silent' }), { witness: { file: null, url: 'http://127.0.0.1:9/add-checkpoint' } });
    await append(id, 2);
    await s.sealTenant(id);
    await s.httpWitness!.settle();
    expect(s.httpWitness!.states.get(id)).toMatchObject({ state: 'error', message: expect.stringMatching(/unreachable/) });
    expect(s.httpWitness!.retry.get(id)).toMatchObject({ size: 2 });
  });

  it('the witness settings are checked at start, naming the variable', () => {
    expect(witnessConfig({}, '/data')).toEqual({ file: '/data/audit-witness.jsonl', url: null });
    expect(witnessConfig({ GUICHET_WITNESS_FILE: 'off', GUICHET_WITNESS_URL: 'https://w.example/add-checkpoint' }, '/data')).toEqual({ file: null, url: 'https://w.example/add-checkpoint' });
    expect(() => witnessConfig({ GUICHET_WITNESS_URL: 'not a url' }, '/data')).toThrow(ConfigError);
    expect(() => witnessConfig({ GUICHET_WITNESS_URL: 'ftp://x/' }, '/data')).toThrow(/GUICHET_WITNESS_URL: must be an http/);
  });
});

describe('the security console', () => {
  let app: TestApp;
  let witnessFile: string;
  const saved = process.env.GUICHET_WITNESS_FILE;

  beforeAll(async () => {
    witnessFile = join(dir, 'console-witness.jsonl');
    process.env.GUICHET_WITNESS_FILE = witnessFile;
    app = await startTestApp(t);
  });
  afterAll(async () => {
    await app?.close();
    if (saved === undefined) delete process.env.GUICHET_WITNESS_FILE;
    else process.env.GUICHET_WITNESS_FILE = saved;
  });

  // Signed in with a second factor, as staff must be.
  const officer = (tenantId: string): Actor =>
    ({
      accountId: randomUUID(),
      tenantId,
      sessionId: null,
      email: 'securite@exemple.test',
      emailVerified: true,
      locale: 'fr',
      memberships: [{ id: randomUUID(), role: 'security_officer', facilityId: null, expiresAt: null }],
      mfa: true,
    }) as Actor;

  it('shows an administrator the latest head, the key, and that the witness agrees, in French and English', async () => {
    const tenant = await tenantFor(app);
    const email = `admin-${randomUUID().slice(0, 8)}@exemple.test`;
    await createAdmin(app, tenant, email);
    const sealer = new Sealer(t.db, app.deps.keys, pino({ level: 'silent' }), { witness: { file: witnessFile, url: null } });
    await sealer.sealTenant(tenant.id);
    const c = new Client(app.app, tenant.hosts[0]!);
    await c.signIn(email, PASSWORD);
    const fr = await c.get('/security/audit?lang=fr');
    expect(fr.status).toBe(200);
    const text = textOf(fr.body);
    expect(text).toContain('Journal d’audit');
    expect(text).toContain('Concorde');
    expect(text).toContain(sealer.signer(tenant.id).verifierKeyText.slice(0, 16));
    expect(fr.body).toContain(`guichet.audit/${tenant.id}`);
    const en = await c.get('/security/audit?lang=en');
    expect(textOf(en.body)).toContain('Agrees');
    // Reading the console is itself an event.
    const reads = await t.ownerDb().selectFrom('audit_events').select(['outcome']).where('tenant_id', '=', tenant.id).where('action', '=', 'audit.head.read').execute();
    expect(reads.map((r) => r.outcome)).toEqual(['success', 'success']);
  });

  it('tells a security officer when the witness disagrees, or is behind', async () => {
    const tenant = await tenantFor(app);
    const sealer = new Sealer(t.db, app.deps.keys, pino({ level: 'silent' }), { witness: { file: witnessFile, url: null } });
    await append(tenant.id, 3);
    await sealer.sealTenant(tenant.id);
    const ctx = ctxFor(app, tenant, officer(tenant.id));
    const ok = await auditConsole(app.deps, ctx, { file: witnessFile, url: null });
    expect(ok).toMatchObject({ head: { treeSize: 3 }, witness: { agreement: 'agrees', latest: { tree_size: 3 } } });
    // Sealed without the witness: it is behind, and the tree extends what it holds.
    await append(tenant.id, 2);
    await new Sealer(t.db, app.deps.keys, pino({ level: 'silent' })).sealTenant(tenant.id);
    expect((await auditConsole(app.deps, ctx, { file: witnessFile, url: null })).witness.agreement).toBe('behind');
    // A head the database never had (or lost): it disagrees.
    const signer = new TenantSigner(app.deps.keys, tenant.id);
    appendFileSync(witnessFile, `${JSON.stringify(witnessRecord(signer.sign(9, Buffer.alloc(32, 4), new Date()), new Date()))}\n`);
    expect((await auditConsole(app.deps, ctx, { file: witnessFile, url: null })).witness.agreement).toBe('disagrees');
    const page = await auditConsole(app.deps, { ...ctx, locale: 'en' }, { file: null, url: null });
    expect(page.witness.agreement).toBe('notConfigured');
  });

  it('is refused to parents and to people signed out, and the refusal is recorded', async () => {
    const tenant = await tenantFor(app);
    const anonymous = await new Client(app.app, tenant.hosts[0]!).get('/security/audit');
    expect([302, 303, 401]).toContain(anonymous.status);
    const parentEmail = `parent-${randomUUID().slice(0, 8)}@exemple.test`;
    await createParent(app, tenant, parentEmail);
    const c = new Client(app.app, tenant.hosts[0]!);
    await c.signIn(parentEmail, PASSWORD);
    const r = await c.get('/security/audit');
    expect(r.status).toBe(403);
    await expect(auditConsole(app.deps, ctxFor(app, tenant, null), { file: null, url: null })).rejects.toThrow(AppError);
    const denied = await t.ownerDb().selectFrom('audit_events').select(['outcome', 'details']).where('tenant_id', '=', tenant.id).where('action', '=', 'audit.head.read').execute();
    expect(denied.map((d) => d.outcome)).toEqual(['denied', 'denied', 'denied']);
  });
});
