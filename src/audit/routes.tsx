import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import type { ComponentChildren } from 'preact';
import { decide, refusal } from '../access/decide.ts';
import type { Ctx, Deps } from '../context.ts';
import { originOf } from '../context.ts';
import type { KeyProvider } from '../crypto/keys.ts';
import type { DB } from '../db/schema.ts';
import { inTenant } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { Page, SummaryList, Tag } from '../web/components.tsx';
import { formatDateTime } from '../web/i18n/index.ts';
import { pageEnv, sendPage } from '../web/render.tsx';
import { appendAudit, appendAuditAlone } from './log.ts';
import { runningSealer, type SealerStatus } from './sealer.ts';
import { SignerCache, type TenantSigner } from './signing.ts';
import { countHeads, countPending, latestHead, rootAt, type Head } from './store.ts';
import { openCheckpoint } from './verify-bundle.ts';
import { readWitnessFile, witnessConfig, witnessRecordsFor, type HttpWitnessState, type WitnessConfig, type WitnessRecord } from './witness.ts';

export type WitnessAgreement = 'agrees' | 'behind' | 'disagrees' | 'none' | 'notConfigured';

export interface AuditConsole {
  head: Head | null;
  pending: number;
  heads: number;
  verifierKey: string;
  witness: { agreement: WitnessAgreement; latest: WitnessRecord | null; file: string | null };
  http: { url: string; state: HttpWitnessState } | null;
  sealer: SealerStatus | null;
}

const signerCaches = new WeakMap<KeyProvider, SignerCache>();
function signerFor(keys: KeyProvider, tenantId: string): TenantSigner {
  let c = signerCaches.get(keys);
  if (!c) signerCaches.set(keys, (c = new SignerCache(keys)));
  return c.for(tenantId);
}

/** The latest record the witness file holds for the tenant (the end of the file first: it is where the latest are). */
async function latestWitnessRecord(file: string, tenantId: string): Promise<WitnessRecord | null> {
  const pick = (rs: WitnessRecord[]) => rs.reduce<WitnessRecord | null>((a, r) => (!a || r.tree_size > a.tree_size ? r : a), null);
  const tail = pick(witnessRecordsFor(await readWitnessFile(file, { tailBytes: 1 << 20 }), tenantId));
  return tail ?? pick(witnessRecordsFor(await readWitnessFile(file), tenantId));
}

/**
 * Whether the witness's copy agrees with the database: its latest head must be
 * validly signed by the tenant's key, and the tree the database holds now
 * must have that very root at that size (then it only grew since).
 */
async function agreement(db: Kysely<DB>, tenantId: string, signer: TenantSigner, head: Head | null, record: WitnessRecord | null): Promise<WitnessAgreement> {
  if (!record) return 'none';
  try {
    const cp = openCheckpoint(record.checkpoint, signer.verifier);
    if (cp.size !== record.tree_size || cp.root.toString('base64') !== record.root_hash) return 'disagrees';
  } catch {
    return 'disagrees';
  }
  if (!head || record.tree_size > head.treeSize) return 'disagrees';
  try {
    const root = record.tree_size === head.treeSize ? head.rootHash : await inTenant(db, tenantId, (trx) => rootAt(trx, tenantId, record.tree_size));
    if (root.toString('base64') !== record.root_hash) return 'disagrees';
  } catch {
    return 'disagrees';
  }
  return record.tree_size === head.treeSize ? 'agrees' : 'behind';
}

export async function auditConsole(deps: Deps, ctx: Ctx, witness: WitnessConfig): Promise<AuditConsole> {
  const d = decide(ctx.actor, 'audit.head.read', { type: 'tenant' }, ctx.now);
  const origin = originOf(ctx);
  const base = { actorAccountId: origin.actorAccountId, actorRoles: origin.actorRoles, ip: origin.ip, userAgent: origin.userAgent, requestId: origin.requestId, targetType: 'audit_log' };
  if (!d.allowed) {
    await appendAuditAlone(deps.db.db, ctx.tenant.id, { action: 'audit.head.read', outcome: 'denied', ...base, details: { reason: d.reason ?? 'denied' } }, ctx.now);
    throw refusal(ctx.actor, d);
  }
  const tenantId = ctx.tenant.id;
  const signer = signerFor(deps.keys, tenantId);
  const { head, pending, heads } = await inTenant(
    deps.db.db,
    tenantId,
    async (trx) => {
      const head = await latestHead(trx, tenantId);
      const pending = await countPending(trx, tenantId, head ? { ticket: head.lastTicket, seq: head.lastSeq } : null);
      const heads = await countHeads(trx, tenantId);
      // Looking at the log's state is itself worth a line in the log.
      await appendAudit(trx, tenantId, { action: 'audit.head.read', outcome: 'success', ...base, details: { tree_size: head?.treeSize ?? 0 } }, ctx.now);
      return { head, pending, heads };
    },
    ctx.actor?.accountId,
  );
  let latest: WitnessRecord | null = null;
  let agree: WitnessAgreement = 'notConfigured';
  if (witness.file) {
    latest = await latestWitnessRecord(witness.file, tenantId).catch(() => null);
    agree = await agreement(deps.db.db, tenantId, signer, head, latest);
  }
  const sealer = runningSealer(deps.db.db) ?? null;
  const httpState = sealer?.httpWitness?.states.get(tenantId) ?? { state: 'idle' as const };
  return {
    head,
    pending,
    heads,
    verifierKey: signer.verifierKeyText,
    witness: { agreement: agree, latest, file: witness.file },
    http: witness.url ? { url: witness.url, state: httpState } : null,
    sealer: sealer?.status() ?? null,
  };
}

/** Long tokens (hashes, keys) may break anywhere: a <wbr> every 16 characters. */
function breakable(s: string) {
  const parts: (string | ReturnType<typeof Wbr>)[] = [];
  for (let i = 0; i < s.length; i += 16) {
    if (i) parts.push(<Wbr />);
    parts.push(s.slice(i, i + 16));
  }
  return parts;
}
function Wbr() {
  return <wbr />;
}

const TONE: Record<WitnessAgreement, 'green' | 'blue' | 'orange' | 'grey'> = { agrees: 'green', behind: 'blue', disagrees: 'orange', none: 'grey', notConfigured: 'grey' };

/**
 * The security console's view of the audit log. The sealer itself is a
 * background job (src/jobs/jobs.ts): `guichet serve` or `guichet worker`
 * runs it; the console shows its status when it runs in this process.
 */
export function auditRoutes(app: FastifyInstance, deps: Deps) {
  // Read once at start; a bad value stops the start with the variable's name.
  const witness = witnessConfig(process.env, deps.config.dataDir);

  app.get('/security/audit', async (req, reply) => {
    const c = await auditConsole(deps, req.ctx, witness);
    const env = pageEnv(req, reply);
    const a = env.m.audit;
    const n = (x: number) => new Intl.NumberFormat(env.locale === 'fr' ? 'fr-CA' : 'en-CA').format(x);
    const w = c.witness;
    return sendPage(
      reply,
      <Page env={env} title={a.title}>
        <h1>{a.title}</h1>
        <p class="lead">{a.lead}</p>
        <p>
          <a href="/security/incidents">{env.m.incidents.title}</a>
        </p>
        <h2>{a.headTitle}</h2>
        {c.head ? (
          <SummaryList
            rows={[
              [a.treeSize, n(c.head.treeSize)],
              [a.signedAt, formatDateTime(env.locale, c.head.signedAt)],
              [a.rootHash, <code>{breakable(c.head.rootHash.toString('base64'))}</code>],
              [a.heads, n(c.heads)],
              [a.pending, n(c.pending)],
            ]}
          />
        ) : (
          <p>{a.noHead}</p>
        )}
        <h2>{a.witnessTitle}</h2>
        <SummaryList
          rows={[
            [a.witnessStatus, <Tag tone={TONE[w.agreement]}>{a.status[w.agreement]}</Tag>],
            [a.witnessExplainLabel, a.explain[w.agreement]],
            ...(w.latest ? ([[a.witnessLatest, a.sizeAt(n(w.latest.tree_size), formatDateTime(env.locale, new Date(w.latest.time)))]] as [string, string][]) : []),
            ...(w.file ? ([[a.witnessFile, <code>{w.file}</code>]] as [string, ComponentChildren][]) : []),
            ...(c.http
              ? ([
                  [
                    a.witnessHttp,
                    c.http.state.state === 'ok' ? (
                      a.httpOk(n(c.http.state.size))
                    ) : c.http.state.state === 'error' ? (
                      <>
                        {a.httpError} <code>{c.http.state.message}</code>
                      </>
                    ) : (
                      a.httpIdle
                    ),
                  ],
                ] as [string, ComponentChildren][])
              : []),
          ]}
        />
        <h2>{a.keyTitle}</h2>
        <p>{a.keyHint}</p>
        <p>
          <code>{breakable(c.verifierKey)}</code>
        </p>
        {c.head && (
          <>
            <h2>{a.checkpoint}</h2>
            <pre class="mail-body">
              <code>{c.head.checkpoint}</code>
            </pre>
          </>
        )}
        {c.sealer && (
          <p class="hint">
            {c.sealer.lastError ? a.sealerError : a.sealerRunning}
            {c.sealer.lastSealAt ? ` ${a.sealerLast(formatDateTime(env.locale, new Date(c.sealer.lastSealAt)))}` : ''}
          </p>
        )}
      </Page>,
    );
  });
}
