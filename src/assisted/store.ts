import { sql, type RawBuilder } from 'kysely';
import type { Assisting } from '../access/actor.ts';
import type { Trx } from '../db/connection.ts';

/** How long an assisted session lasts once the parent's code is accepted. */
export const ASSISTED_MINUTES = 30;
/** How long the code e-mailed to the parent stays good. */
export const CODE_MINUTES = 15;
/** Wrong codes allowed before the consent is closed (a new code must be asked for). */
export const CODE_TRIES = 5;
/** Code requests allowed in a window: per agent, and per parent (each one e-mails the parent). */
export const REQUESTS_PER_AGENT = 5;
export const REQUESTS_PER_PARENT = 3;
export const REQUEST_WINDOW_MS = 15 * 60_000;

/** The assisted session a signed-in session is running now, if any (read once per request by resolveSession). */
/** activeAssisting as a column of another statement (the session's look-up): JSON, or null. */
export function activeAssistingSql(sessionId: RawBuilder<unknown>, now: Date) {
  // Aliases of their own: the statement around this one may call its tables s and a.
  return sql<AssistingJson | null>`(SELECT pg_catalog.json_build_object('id', asn.id, 'account_id', asn.parent_account_id, 'email', asp.email, 'status', asp.status, 'until', asn.expires_at)
    FROM assisted_sessions asn JOIN accounts asp ON asp.id = asn.parent_account_id
    WHERE asn.agent_session_id = ${sessionId} AND asn.started_at IS NOT NULL AND asn.ended_at IS NULL AND asn.expires_at > ${now}
    ORDER BY asn.started_at DESC LIMIT 1)`;
}

type AssistingJson = { id: string; account_id: string; email: string; status: string; until: string | null };

export function assistingOfJson(j: AssistingJson | null): Assisting | null {
  if (!j || !j.until || j.status !== 'active') return null;
  return { id: j.id, accountId: j.account_id, email: j.email, until: new Date(j.until) };
}

export async function activeAssisting(trx: Trx, sessionId: string, now: Date): Promise<Assisting | null> {
  const r = await trx
    .selectFrom('assisted_sessions as s')
    .innerJoin('accounts as a', 'a.id', 's.parent_account_id')
    .select(['s.id', 's.parent_account_id', 's.expires_at', 'a.email', 'a.status'])
    .where('s.agent_session_id', '=', sessionId)
    .where('s.started_at', 'is not', null)
    .where('s.ended_at', 'is', null)
    .where('s.expires_at', '>', now)
    .orderBy('s.started_at', 'desc')
    .executeTakeFirst();
  if (!r || !r.expires_at || r.status !== 'active') return null;
  return { id: r.id, accountId: r.parent_account_id, email: r.email, until: r.expires_at };
}
