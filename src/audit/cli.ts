/**
 * `guichet audit …`: verify, export, check, key. Called from the CLI's audit
 * case with what it needs from there (the database opener, the tenants).
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { Kysely } from 'kysely';
import pino from 'pino';
import type { Config } from '../config/config.ts';
import { loadKeyProvider } from '../crypto/keys.ts';
import type { DB } from '../db/schema.ts';
import type { AuditOrigin } from './events.ts';
import { exportBundle, ExportError } from './export.ts';
import { appendAuditAlone } from './log.ts';
import { Sealer } from './sealer.ts';
import { SignerCache } from './signing.ts';
import { checkDryRunReads } from '../records/allocation.ts';
import { verifyTenant } from './verify.ts';
import { verifyBundle, VerifyError } from './verify-bundle.ts';
import { readWitnessFile, witnessConfig, WitnessConfigError, witnessRecordsFor, type WitnessFileContents } from './witness.ts';

export interface AuditCliContext {
  config: Config;
  withDatabase<T>(fn: (db: Kysely<DB>) => Promise<T>): Promise<T>;
  /** The tenant named by --tenant (or the default one); throws the CLI's usage error when unknown. */
  tenantOrFail(db: Kysely<DB>, slug: string | undefined): Promise<{ id: string; slug: string }>;
  allTenants(db: Kysely<DB>): Promise<{ id: string; slug: string }[]>;
  origin(command: string): AuditOrigin;
  out(text: string): void;
  err(text: string): void;
}

export const AUDIT_USAGE = `usage: guichet audit verify [--tenant T] [--no-seal]
       guichet audit export --tenant T --from ISO --to ISO --out FILE [--max-heads N]
       guichet audit check BUNDLE [--key KEY]
       guichet audit key [--tenant T]`;

class Usage extends Error {}

/** A date or date-time in ISO 8601; a bare date is midnight UTC. */
function isoArg(v: string | undefined, name: string): Date {
  if (!v) throw new Usage(`${name} is required (ISO 8601, e.g. 2025-01-31 or 2025-01-31T12:00:00Z)`);
  const ok = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2}))?$/.test(v);
  const d = new Date(/T/.test(v) ? v : `${v}T00:00:00Z`);
  if (!ok || Number.isNaN(d.getTime())) throw new Usage(`${name}: "${v}" is not an ISO 8601 date or date-time with a time zone`);
  return d;
}

const MAX_BUNDLE_BYTES = 1 << 30;

export async function runAuditCommand(args: string[], ctx: AuditCliContext): Promise<number> {
  const [sub, ...rest] = args;
  try {
    switch (sub) {
      case 'verify':
        return await verify(rest, ctx);
      case 'export':
        return await exportCmd(rest, ctx);
      case 'check':
        return check(rest, ctx);
      case 'key':
        return await keyCmd(rest, ctx);
      default:
        throw new Usage(AUDIT_USAGE);
    }
  } catch (err) {
    if (err instanceof Usage || err instanceof WitnessConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      ctx.err(`guichet: ${(err as Error).message}\n`);
      return 2;
    }
    if (err instanceof ExportError) {
      ctx.err(`guichet: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

function sealerFor(ctx: AuditCliContext, db: Kysely<DB>): Sealer {
  const keys = loadKeyProvider(process.env, ctx.config.dataDir);
  return new Sealer(db, keys, pino({ level: 'silent' }), { witness: witnessConfig(process.env, ctx.config.dataDir) });
}

async function verify(args: string[], ctx: AuditCliContext): Promise<number> {
  const { values } = parseArgs({ args, options: { tenant: { type: 'string' }, 'no-seal': { type: 'boolean' } } });
  const witness = witnessConfig(process.env, ctx.config.dataDir);
  return ctx.withDatabase(async (db) => {
    const tenants = values.tenant ? [await ctx.tenantOrFail(db, values.tenant)] : await ctx.allTenants(db);
    const sealer = sealerFor(ctx, db);
    // Events still waiting are committed to a signed head first: only then can
    // anything be said about them, and the witness gets that head too.
    if (!values['no-seal']) {
      for (const t of tenants) {
        let sealed = 0;
        try {
          for (let r = await sealer.sealTenant(t.id); ; r = await sealer.sealTenant(t.id)) {
            sealed += r.sealed;
            if (!r.more) break;
          }
        } catch (err) {
          ctx.out(`${t.slug}: not sealed: ${(err as Error).message}\n`);
        }
        if (sealed) ctx.out(`${t.slug}: ${sealed} waiting events sealed into a new signed head\n`);
      }
      await sealer.httpWitness?.settle();
    }
    let contents: WitnessFileContents | null = null;
    if (witness.file) {
      contents = await readWitnessFile(witness.file);
      if (contents.malformed.length) ctx.out(`witness file ${witness.file}: ${contents.malformed.length} line(s) are not records (lines ${contents.malformed.slice(0, 5).join(', ')}…)\n`);
    }
    let bad = 0;
    for (const t of tenants) {
      const r = await verifyTenant(db, t.id, { key: sealer.signer(t.id).verifier, witness: contents ? witnessRecordsFor(contents, t.id) : null });
      // What the log's dry-run events say they read, against the rows that tell the families (src/records/allocation.ts).
      const reads = r.ok ? await checkDryRunReads(db, t.id) : null;
      if (reads?.bad) {
        bad++;
        const b = reads.bad;
        ctx.out(`${t.slug}: BROKEN at event ${b.seq} (${b.eventId}): the files recorded as read by this allocation dry run (${b.recorded} in allocation_reads) are not the ${b.announced} its event sealed\n`);
      } else if (r.ok) {
        const parts = [`${t.slug}: ok, ${r.events} events`, `tree of ${r.treeSize} leaves`, `${r.heads} signed heads`];
        if (r.pending) parts.push(`${r.pending} waiting for the sealer`);
        if (r.witness) parts.push(r.witness.latestSize === null ? 'the witness holds no head yet' : `witness agrees (${r.witness.records} heads, latest of size ${r.witness.latestSize})`);
        if (reads?.runs) parts.push(`the reads of ${reads.runs} allocation dry run${reads.runs > 1 ? 's' : ''} match their events`);
        ctx.out(`${parts.join(', ')}\n`);
      } else {
        bad++;
        const b = r.firstBad!;
        const where = b.leafIndex === null ? '' : ` at leaf ${b.leafIndex}${b.eventId ? ` (event ${b.eventSeq ? `${b.eventSeq}, ` : ''}${b.eventId})` : ''}`;
        ctx.out(`${t.slug}: BROKEN${where}: ${b.problem}\n`);
      }
    }
    return bad ? 1 : 0;
  });
}

async function exportCmd(args: string[], ctx: AuditCliContext): Promise<number> {
  const { values } = parseArgs({ args, options: { tenant: { type: 'string' }, from: { type: 'string' }, to: { type: 'string' }, out: { type: 'string' }, 'max-heads': { type: 'string' } } });
  if (!values.tenant) throw new Usage('--tenant is required');
  const from = isoArg(values.from, '--from');
  const to = isoArg(values.to, '--to');
  if (!(from < to)) throw new Usage('--from must be before --to');
  if (!values.out) throw new Usage('--out FILE is required');
  const maxHeads = values['max-heads'] === undefined ? 1000 : Number(values['max-heads']);
  if (!Number.isInteger(maxHeads) || maxHeads < 2 || maxHeads > 1_000_000) throw new Usage('--max-heads: a whole number from 2 to 1,000,000');
  return ctx.withDatabase(async (db) => {
    const t = await ctx.tenantOrFail(db, values.tenant);
    const sealer = sealerFor(ctx, db);
    for (let r = await sealer.sealTenant(t.id); r.more; r = await sealer.sealTenant(t.id));
    await sealer.httpWitness?.settle();
    const bundle = await exportBundle(db, t, sealer.signer(t.id), { from, to }, { maxHeads });
    // The bundle names people's files and addresses: readable by its owner only.
    writeFileSync(values.out!, `${JSON.stringify(bundle, null, 1)}\n`, { mode: 0o600 });
    const o = ctx.origin('audit export');
    await appendAuditAlone(
      db,
      t.id,
      {
        action: 'audit.export',
        outcome: 'success',
        actorAccountId: o.actorAccountId,
        actorRoles: o.actorRoles,
        ip: o.ip,
        userAgent: o.userAgent,
        requestId: o.requestId,
        targetType: 'audit_log',
        details: { from: from.toISOString(), to: to.toISOString(), events: bundle.events.length, tree_size: bundle.heads[bundle.heads.length - 1]!.tree_size },
      },
      new Date(),
    );
    const latest = bundle.heads[bundle.heads.length - 1]!;
    ctx.out(`${values.out}: ${bundle.events.length} events, ${bundle.heads.length} signed heads (latest: size ${latest.tree_size}, ${latest.time}), key ${bundle.public_key.verifier_key}\n`);
    return 0;
  });
}

function check(args: string[], ctx: AuditCliContext): number {
  const { values, positionals } = parseArgs({ args, options: { key: { type: 'string' } }, allowPositionals: true });
  if (positionals.length !== 1) throw new Usage('usage: guichet audit check BUNDLE [--key KEY]');
  const file = positionals[0]!;
  let text: string;
  try {
    if (statSync(file).size > MAX_BUNDLE_BYTES) throw new Usage(`${file}: larger than 1 GiB, not a bundle this verifier reads`);
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof Usage) throw err;
    throw new Usage(`${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let key = values.key;
  if (key?.startsWith('@')) {
    try {
      key = readFileSync(key.slice(1), 'utf8').trim();
    } catch (err) {
      throw new Usage(`--key ${key}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  }
  try {
    const r = verifyBundle(text, { key });
    ctx.out(
      `${file}: ok: ${r.events} events of ${r.tenantId} from ${r.range.from} to ${r.range.to}, each included in the head of size ${r.latest.size} (${r.latest.time}); ` +
        `${r.heads} signed heads, each consistent with the one before\n`,
    );
    if (r.keySource === 'bundle') ctx.out(`note: checked against the key inside the bundle (${r.key}); pin the tenant's published key with --key to rule out a substituted one\n`);
    return 0;
  } catch (err) {
    if (err instanceof VerifyError) {
      ctx.err(`guichet: ${file}: rejected: ${err.message}\n`);
      return 1;
    }
    // Whatever the bundle holds, an auditor gets a message, not a stack trace.
    ctx.err(`guichet: ${file}: rejected: the verifier could not read it (${(err as Error).message})\n`);
    return 1;
  }
}

async function keyCmd(args: string[], ctx: AuditCliContext): Promise<number> {
  const { values } = parseArgs({ args, options: { tenant: { type: 'string' } } });
  const signers = new SignerCache(loadKeyProvider(process.env, ctx.config.dataDir));
  return ctx.withDatabase(async (db) => {
    const tenants = values.tenant ? [await ctx.tenantOrFail(db, values.tenant)] : await ctx.allTenants(db);
    for (const t of tenants) ctx.out(`${t.slug}: ${signers.for(t.id).verifierKeyText}\n`);
    return 0;
  });
}
