/**
 * What reaches the logs of a failure: a real database error (a unique key
 * clash on an account's e-mail) is logged with its code and constraint, never
 * with the values PostgreSQL quotes in it.
 */
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { createLogger } from '../../src/server.ts';
import { createTestDatabase, createTestTenant, type TestDatabase } from '../helpers/db.ts';

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await database?.close();
});

describe('logs', () => {
  it('a database error is logged without the values it quotes', async () => {
    const tenant = await createTestTenant(database);
    const email = `parent.${Date.now().toString(36)}@exemple.test`;
    // As the owner (the CLI's connection on the embedded database, or a migration): under row-level security
    // PostgreSQL itself leaves the values out of the detail, but a superuser or the owner without it gets them.
    const insert = () => database.ownerDb().insertInto('accounts').values({ tenant_id: tenant.id, email, email_verified_at: null, password_hash: null, locale: 'fr' }).execute();
    await insert();
    const err = await insert().then(
      () => null,
      (e: unknown) => e as Error & { detail?: string; code?: string },
    );
    expect(err).not.toBeNull();
    // What PostgreSQL (and PGlite) put in the error: the address itself.
    expect(err!.detail ?? '').toContain(email);

    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(String(chunk));
        done();
      },
    });
    const log = createLogger({ ...loadConfig({ NODE_ENV: 'test' }), logLevel: 'info' }, sink);
    log.error({ err }, 'request failed');
    log.flush?.();
    const out = lines.join('');
    expect(out).toContain('request failed');
    expect(out).toContain('23505');
    expect(out).not.toContain(email);
    expect(out).not.toContain('"detail"');
    expect(out).not.toContain('"params"');
  });
});
