import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTenant } from '../../src/db/tenant.ts';
import { MailSender } from '../../src/mail/sender.ts';
import { PASSWORD, startTestApp, tenantFor, type TestApp } from '../helpers/app.ts';
import { Client } from '../helpers/client.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { decodedBody, Inbox } from '../helpers/inbox.ts';

let database: TestDatabase;
let t: TestApp;
let inbox: Inbox;
let sender: MailSender;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await startTestApp(database);
  inbox = new Inbox();
  const port = await inbox.start();
  sender = new MailSender(t.deps, `smtp://127.0.0.1:${port}?ignoreTLS=true`);
});
afterAll(async () => {
  await sender?.stop();
  await inbox?.stop();
  await t?.close();
  await database?.close();
});

describe('mail goes out over SMTP', () => {
  it('delivers the verification e-mail in the reader’s language, once, and marks it sent', async () => {
    const tenant = await tenantFor(t);
    const c = new Client(t.app, tenant.hosts[0]!);
    await c.get('/signup');
    await c.post('/signup', { email: 'marie@exemple.test', password: PASSWORD, passwordConfirm: PASSWORD });
    await c.get('/signup?lang=en');
    await c.post('/signup', { email: 'john@exemple.test', password: PASSWORD, passwordConfirm: PASSWORD });
    const before = inbox.received.length;
    expect(await sender.tick([tenant.id])).toBe(2);
    const got = inbox.received.slice(before);
    const fr = got.find((m) => m.to.includes('marie@exemple.test'))!;
    const en = got.find((m) => m.to.includes('john@exemple.test'))!;
    expect(fr.raw).toMatch(/Content-Language: fr/);
    expect(decodedBody(fr.raw)).toContain('Pour confirmer votre adresse courriel');
    expect(decodedBody(fr.raw)).toMatch(/\/verify-email\?token=[A-Za-z0-9_-]{43}/);
    expect(en.raw).toMatch(/Subject: Confirm your e-mail address/);
    expect(decodedBody(en.raw)).toContain('To confirm your e-mail address');
    // sent once: a second tick finds nothing to send for this tenant
    const count = inbox.received.length;
    expect(await sender.tick([tenant.id])).toBe(0);
    expect(inbox.received.length).toBe(count);
    const rows = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').select(['sent_at', 'attempts']).execute());
    expect(rows.every((r) => r.sent_at && r.attempts === 1)).toBe(true);
  });

  it('keeps a refused message and retries it, recording the error', async () => {
    const tenant = await tenantFor(t);
    const c = new Client(t.app, tenant.hosts[0]!);
    await c.get('/signup');
    await c.post('/signup', { email: 'retry@exemple.test', password: PASSWORD, passwordConfirm: PASSWORD });
    inbox.refuse = true;
    await sender.tick([tenant.id]);
    let row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').selectAll().where('to_address', '=', 'retry@exemple.test').executeTakeFirstOrThrow());
    expect(row.sent_at).toBeNull();
    expect(row.attempts).toBe(1);
    expect(row.last_error).toMatch(/mailbox full/);
    inbox.refuse = false;
    await sender.tick([tenant.id]);
    row = await inTenant(database.db, tenant.id, (trx) => trx.selectFrom('mail_outbox').selectAll().where('to_address', '=', 'retry@exemple.test').executeTakeFirstOrThrow());
    expect(row.sent_at).not.toBeNull();
    expect(inbox.received.some((m) => m.to.includes('retry@exemple.test'))).toBe(true);
  });
});
