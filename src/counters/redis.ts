import { randomUUID } from 'node:crypto';
import { createClient } from '@redis/client';
import type { Logger } from 'pino';
import type { Trx } from '../db/connection.ts';
import type { DetectionSignal } from '../db/schema.ts';
import { MAX_WINDOW_SECONDS } from '../detection/rules.ts';
import type { Quota, QuotaKind, SharedCounters, SignInCounts, SignInWindows } from './counters.ts';

/**
 * The same counters in Redis. Each window is a sorted set scored by the
 * event's time (the injected clock's, as with the rows), trimmed as it is
 * written and expiring by itself once its longest window has passed, so
 * nothing needs purging. Every read-and-write is one Lua script, which
 * Redis runs atomically: two instances recording a failure at once see
 * distinct totals (the lock and the spraying record happen exactly once).
 *
 * Keys carry the tenant in a hash tag ({tenant}), so that one script's keys
 * sit on one cluster slot and a tenant's counters can be found and dropped
 * together. Account keys use the keyed hash of the address typed, never the
 * address.
 */

// Lua 5.1 prints big numbers in exponent form: every time is passed and formatted as an integer string.
const LUA_HELPERS = `
local function n(x) return string.format('%.0f', x) end
`;

const SIGNIN = `${LUA_HELPERS}
local mode = ARGV[1]
local now = tonumber(ARGV[2])
local member = ARGV[3]
local ek = ARGV[4]
local accMs = tonumber(ARGV[5])
local srcMs = tonumber(ARGV[6])
local blockMs = math.max(srcMs, tonumber(ARGV[7]))
local hasIp = #KEYS >= 3
if mode == 'ok' then
  local prev = tonumber(redis.call('GET', KEYS[2]) or '-1')
  if now > prev then redis.call('SET', KEYS[2], n(now), 'PX', n(accMs)) end
  return {}
end
if mode == 'fail' then
  redis.call('ZADD', KEYS[1], n(now), member)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', n(now - accMs))
  redis.call('PEXPIRE', KEYS[1], n(accMs))
  if hasIp then
    redis.call('ZADD', KEYS[3], n(now), member .. ':' .. ek)
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', n(now - blockMs))
    redis.call('PEXPIRE', KEYS[3], n(blockMs))
  end
end
local accSince = now - accMs
local from = accSince
local okAt = tonumber(redis.call('GET', KEYS[2]) or '-1')
if okAt > from then from = okAt end
local accFailures = redis.call('ZCOUNT', KEYS[1], '(' .. n(from), '+inf')
local accLast = -1
local a = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. n(accSince), 'WITHSCORES', 'LIMIT', 0, 1)
if a[2] then accLast = tonumber(a[2]) end
local srcFailures, srcLast, srcAccounts = 0, -1, 0
if hasIp then
  local sprayStart = '(' .. n(now - srcMs)
  srcFailures = redis.call('ZCOUNT', KEYS[3], sprayStart, '+inf')
  local s = redis.call('ZREVRANGEBYSCORE', KEYS[3], '+inf', '(' .. n(now - blockMs), 'WITHSCORES', 'LIMIT', 0, 1)
  if s[2] then srcLast = tonumber(s[2]) end
  local seen = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], sprayStart, '+inf')) do
    local k = string.match(m, ':([^:]*)$')
    if k and not seen[k] then seen[k] = true; srcAccounts = srcAccounts + 1 end
  end
end
return {accFailures, n(accLast), srcFailures, n(srcLast), srcAccounts}
`;

const QUOTA = `${LUA_HELPERS}
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local w = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', n(now - w))
local since = '(' .. n(now - w)
if redis.call('ZCOUNT', KEYS[1], since, '+inf') >= limit then
  local first = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return {0, first[2]}
end
redis.call('ZADD', KEYS[1], n(now), ARGV[4])
redis.call('PEXPIRE', KEYS[1], n(w))
return {1}
`;

const TOTALS = `${LUA_HELPERS}
local now = tonumber(ARGV[1])
local widest = 0
for i = 2, #ARGV do widest = math.max(widest, tonumber(ARGV[i])) end
local totals = {}
for i = 2, #ARGV do totals[i - 1] = 0 end
local hits = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. n(now - widest), '+inf', 'WITHSCORES')
for j = 1, #hits, 2 do
  local weight = tonumber(string.match(hits[j], ':(%d+)$'))
  local at = tonumber(hits[j + 1])
  for i = 2, #ARGV do
    if at > now - tonumber(ARGV[i]) then totals[i - 1] = totals[i - 1] + weight end
  end
end
return totals
`;

const HIT = `${LUA_HELPERS}
local now = tonumber(ARGV[1])
local keep = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], n(now), ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', n(now - keep))
redis.call('PEXPIRE', KEYS[1], n(keep))
return 1
`;

function newClient(url: string) {
  return createClient({ url, socket: { connectTimeout: 5000 } });
}

export type RedisClient = ReturnType<typeof newClient>;

export class RedisCounters implements SharedCounters {
  readonly kind = 'redis' as const;
  readonly needsTransaction = false;

  constructor(
    private readonly client: RedisClient,
    private readonly prefix = 'guichet:',
    private readonly owned = true,
  ) {}

  /** Connects to REDIS_URL; connection trouble afterwards is logged and the client reconnects by itself. */
  static async connect(url: string, log: Pick<Logger, 'warn'>, prefix?: string): Promise<RedisCounters> {
    const client = newClient(url);
    client.on('error', (err: Error) => log.warn({ err: { message: err.message } }, 'redis: connection trouble'));
    await client.connect();
    return new RedisCounters(client, prefix);
  }

  private key(tenantId: string, ...parts: string[]): string {
    return `${this.prefix}{${tenantId}}:${parts.join(':')}`;
  }

  private async run(script: string, keys: string[], args: string[]): Promise<unknown> {
    return this.client.eval(script, { keys, arguments: args });
  }

  private async signIn(mode: 'read' | 'ok' | 'fail', tenantId: string, emailKey: Buffer, ip: string | null, w: SignInWindows, now: Date): Promise<SignInCounts> {
    const ek = emailKey.toString('hex');
    const keys = [this.key(tenantId, 'signin', ek, 'fail'), this.key(tenantId, 'signin', ek, 'ok')];
    if (ip !== null) keys.push(this.key(tenantId, 'source', ip, 'fail'));
    const r = (await this.run(SIGNIN, keys, [mode, String(now.getTime()), randomUUID(), ek, String(w.accountMs), String(w.sourceMs), String(w.sourceBlockMs)])) as (number | string)[];
    const time = (x: number | string | undefined) => (x === undefined || Number(x) < 0 ? null : new Date(Number(x)));
    return { accountFailures: Number(r[0] ?? 0), accountLast: time(r[1]), sourceFailures: Number(r[2] ?? 0), sourceLast: time(r[3]), sourceAccounts: Number(r[4] ?? 0) };
  }

  signInCounts(_trx: Trx | null, tenantId: string, emailKey: Buffer, ip: string | null, w: SignInWindows, now: Date): Promise<SignInCounts> {
    return this.signIn('read', tenantId, emailKey, ip, w, now);
  }

  async recordSignIn(_trx: Trx | null, tenantId: string, emailKey: Buffer, ip: string | null, ok: boolean, w: SignInWindows, now: Date): Promise<SignInCounts | null> {
    const c = await this.signIn(ok ? 'ok' : 'fail', tenantId, emailKey, ip, w, now);
    return ok ? null : c;
  }

  async takeQuota(_trx: Trx | null, tenantId: string, kind: QuotaKind, ip: string | null, _emailKey: Buffer, limit: number, windowMs: number, now: Date): Promise<Quota> {
    // Like the rows (ip = NULL matches nothing): a request without a source address is not capped per source.
    if (ip === null) return { ok: true };
    const r = (await this.run(QUOTA, [this.key(tenantId, 'quota', kind, ip)], [String(now.getTime()), String(limit), String(windowMs), randomUUID()])) as (number | string)[];
    return Number(r[0]) === 1 ? { ok: true } : { ok: false, first: new Date(Number(r[1])) };
  }

  async windowTotals(_trx: Trx | null, tenantId: string, accountId: string, signal: DetectionSignal, windowSeconds: readonly number[], now: Date): Promise<number[]> {
    if (!windowSeconds.length) return [];
    const r = (await this.run(TOTALS, [this.key(tenantId, 'hits', accountId, signal)], [String(now.getTime()), ...windowSeconds.map((s) => String(s * 1000))])) as number[];
    return r.map(Number);
  }

  async addHit(_trx: Trx | null, tenantId: string, accountId: string, signal: DetectionSignal, weight: number, now: Date): Promise<void> {
    await this.run(HIT, [this.key(tenantId, 'hits', accountId, signal)], [String(now.getTime()), `${randomUUID()}:${weight}`, String(MAX_WINDOW_SECONDS * 1000)]);
  }

  async close(): Promise<void> {
    if (this.owned && this.client.isOpen) await this.client.close();
  }
}
