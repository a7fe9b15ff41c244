/**
 * Second factors in tests: an authenticator app enrolled straight into the
 * database (as the enrolment page would leave it), and codes that respect
 * the replay guard (each sign-in uses a time step not used before).
 *
 * Staff and administrators made by test/helpers/app.ts get an authenticator
 * app by default — staff cannot open personal data without a second factor —
 * and Client.signIn() answers the second step with it, so a journey test
 * signs them in as before.
 */
import type { Kysely } from 'kysely';
import type { DB } from '../../src/db/schema.ts';
import { inTenant } from '../../src/db/tenant.ts';
import type { Deps } from '../../src/context.ts';
import { insertTotp } from '../../src/identity/factors/store.ts';
import { newTotpSecret, TOTP, totpCodeAt } from '../../src/identity/factors/totp.ts';
import type { Tenant } from '../../src/tenants/service.ts';

/** Secrets by `host|email`, for Client.signIn(). */
const secrets = new Map<string, string>();
/** The last time step a code was made for, per secret. */
const lastStep = new Map<string, number>();

function key(host: string, email: string): string {
  return `${host.toLowerCase()}|${email.toLowerCase()}`;
}

/** Enrols a confirmed authenticator app for the account; returns its secret. */
export async function enrolTotp(deps: Pick<Deps, 'db' | 'keys'> & { clock: () => Date }, tenant: Tenant, accountId: string, email?: string): Promise<string> {
  const secret = newTotpSecret();
  const now = deps.clock();
  await inTenant(deps.db.db, tenant.id, async (trx) => {
    const id = await insertTotp(trx, deps.keys, tenant.id, accountId, secret, now);
    await trx.updateTable('totp_factors').set({ confirmed_at: now }).where('id', '=', id).execute();
  });
  if (email) for (const host of tenant.hosts) secrets.set(key(host, email), secret);
  return secret;
}

export function totpSecretFor(host: string, email: string): string | undefined {
  return secrets.get(key(host.replace(/:\d+$/, ''), email));
}

/**
 * A code the server will accept at `now` and for at least fifteen seconds
 * more: for the earliest such step within ±1 of now's that this helper has
 * not handed out yet. Waits (real time only) when
 * all three are used.
 */
export async function freshTotpCode(secret: string, clock: () => Date): Promise<string> {
  for (;;) {
    const now = clock();
    const current = Math.floor(now.getTime() / 1000 / TOTP.periodSeconds);
    // The previous step's code is good only until the next boundary: hand it out only with at least half
    // a step left, or a slow page (a loaded CI machine) submits it after it has aged out of the window.
    const intoStep = now.getTime() / 1000 - current * TOTP.periodSeconds;
    const earliest = intoStep < TOTP.periodSeconds / 2 ? current - 1 : current;
    const step = Math.max(earliest, (lastStep.get(secret) ?? -Infinity) + 1);
    if (step <= current + 1) {
      lastStep.set(secret, step);
      return totpCodeAt(secret, new Date(step * TOTP.periodSeconds * 1000));
    }
    // A test app's running clock moves on to the next step instead of waiting for it: the server sees
    // the same times as if the test had waited, and the suite does not sleep.
    const shift = clockShifts.get(clock);
    if (shift) {
      shift((current + 1) * TOTP.periodSeconds * 1000 - now.getTime() + 10);
      if (clock().getTime() > now.getTime() + 1000) continue;
    }
    await new Promise((r) => setTimeout(r, 1000));
    if (clock().getTime() === now.getTime()) throw new Error('freshTotpCode: the clock is set and the three codes around it are used; move the clock on (t.setNow)');
  }
}

/** How to move a test app's running clock on, by the clock (deps.clock) it gives its services. */
const clockShifts = new WeakMap<() => Date, (ms: number) => void>();
export function registerClockShift(clock: () => Date, shift: (ms: number) => void): void {
  clockShifts.set(clock, shift);
}

/** Marks a step as used by someone else (a test that typed a code itself). */
export function noteTotpStepUsed(secret: string, at: Date): void {
  const step = Math.floor(at.getTime() / 1000 / TOTP.periodSeconds);
  lastStep.set(secret, Math.max(step, lastStep.get(secret) ?? -Infinity));
}

/**
 * After a raw POST /signin: when it led to the second step and the helpers
 * know the account's app, answers it (with the same extra headers).
 */
export async function completeSecondStep(
  c: { host: string; post(url: string, fields?: Record<string, string>, opts?: { headers?: Record<string, string> }): Promise<{ status: number; headers: Record<string, unknown> }> },
  clock: () => Date,
  email: string,
  r: { status: number; headers: Record<string, unknown> },
  headers: Record<string, string> = {},
) {
  const secret = totpSecretFor(c.host, email);
  if (r.status !== 303 || !String(r.headers.location ?? '').startsWith('/signin/second-factor') || !secret) return r;
  return c.post('/signin/second-factor', { code: await freshTotpCode(secret, clock) }, { headers });
}

/** A link to prove the mailbox for a passkey (src/identity/factors/mailbox.ts), as it appears in the message. */
export const PASSKEY_LINK = /\/account\/security\/passkey-link\?token=[A-Za-z0-9_-]{43}/;

/** The path of the link in the latest passkey-link message to `email` in the tenant's outbox, as the mailer would send it. */
export async function mailedPasskeyLink(db: Kysely<DB>, tenant: Pick<Tenant, 'id'>, email: string): Promise<string> {
  const mails = await inTenant(db, tenant.id, (trx) =>
    trx.selectFrom('mail_outbox').select('body_text').where('to_address', '=', email).where('template', '=', 'passkey_link').orderBy('created_at').execute(),
  );
  const m = PASSKEY_LINK.exec(mails.at(-1)?.body_text ?? '');
  if (!m) throw new Error(`no passkey link in the mail to ${email}`);
  return m[0];
}
