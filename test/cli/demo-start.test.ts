/**
 * `npm start`, as a person trying Guichet would run it: `node bin/guichet.mjs
 * serve --demo` with no NODE_ENV and no database configured. The first start
 * builds the demo (embedded database, the Montérégie directory, synthetic
 * families, three accounts sharing one random password) and prints how to
 * sign in; a second start on the same data directory reuses all of it. With
 * NODE_ENV=production there is no demo, and no password is ever printed.
 *
 * The start-up times (spawn to "listening", spawn to the first 200 on /) are
 * printed for both starts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Variables Guichet reads: none leaks in from the environment the tests run in (npm start sets none). */
const CONFIG_VARS = [
  'PORT',
  'HOST',
  'GUICHET_DATA_DIR',
  'DATABASE_URL',
  'DATABASE_OWNER_URL',
  'SMTP_URL',
  'MAIL_FROM',
  'NODE_ENV',
  'LOG_LEVEL',
  'PUBLIC_URL',
  'GUICHET_DEFAULT_TENANT',
  'GUICHET_ALLOW_PRIVILEGED_DB_ROLE',
  'GUICHET_MASTER_KEY',
  'GUICHET_KEY_FILE',
];

function startEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of CONFIG_VARS) delete env[k];
  return { ...env, ...extra };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

const running = new Set<ChildProcess>();

afterAll(() => {
  for (const child of running) if (child.pid && child.exitCode === null) child.kill('SIGKILL');
});

interface Start {
  child: ChildProcess;
  port: number;
  output: () => string;
  exit: () => { code: number | null; signal: NodeJS.Signals | null } | null;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** ms from spawn to the "Guichet is listening" line, once seen. */
  listeningAfter: () => number | null;
}

function start(env: NodeJS.ProcessEnv, port: number, args: string[] = ['serve', '--demo']): Start {
  const spawned = performance.now();
  const child = spawn(process.execPath, ['bin/guichet.mjs', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let out = '';
  let listenedAt: number | null = null;
  let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const absorb = (b: Buffer) => {
    out += b.toString('utf8');
    if (listenedAt === null && out.includes('Guichet is listening')) listenedAt = performance.now() - spawned;
  };
  child.stdout!.on('data', absorb);
  child.stderr!.on('data', absorb);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      running.delete(child);
      exit = { code, signal };
      resolve(exit);
    }),
  );
  return { child, port, output: () => out, exit: () => exit, exited, listeningAfter: () => listenedAt };
}

/** The "listening" line and what is printed with it, up to the blank line that ends the block. */
const BLOCK = /Guichet is listening on (\S+) \(([^)]*)\)\n((?:[^\n]+\n)*)\n/;

async function waitForBlock(s: Start, timeoutMs: number): Promise<RegExpExecArray | null> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const m = BLOCK.exec(s.output());
    if (m) return m;
    if (s.exit()) return null;
    if (performance.now() > deadline) throw new Error(`no "Guichet is listening" after ${timeoutMs} ms:\n${s.output()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Polls / from the moment of the spawn; resolves with the ms from spawn to the first 200. */
async function firstPage(s: Start, spawnedAt: number, timeoutMs: number): Promise<number> {
  const deadline = spawnedAt + timeoutMs;
  for (;;) {
    if (s.exit()) throw new Error(`server exited (${JSON.stringify(s.exit())}) before / answered:\n${s.output()}`);
    try {
      const res = await fetch(`http://127.0.0.1:${s.port}/`, { signal: AbortSignal.timeout(5_000) });
      await res.arrayBuffer();
      if (res.status === 200) return performance.now() - spawnedAt;
    } catch {
      /* not listening yet */
    }
    if (performance.now() > deadline) throw new Error(`/ did not answer 200 within ${timeoutMs} ms:\n${s.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function stop(s: Start): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (s.exit()) return s.exit()!;
  s.child.kill('SIGTERM');
  const timeout = new Promise<null>((r) => setTimeout(() => r(null), 10_000).unref());
  const e = await Promise.race([s.exited, timeout]);
  if (!e) throw new Error(`server did not exit within 10 s of SIGTERM:\n${s.output()}`);
  return e;
}

interface DemoBlock {
  parent: string;
  staff: string;
  admin: string;
  secondAdmin: string;
  password: string;
}

function demoBlock(text: string): DemoBlock {
  const field = (label: string) => new RegExp(`^\\s+${label}\\s+(\\S+)$`, 'm').exec(text)?.[1];
  const parent = field('parent');
  const staff = field('facility staff');
  const [admin, secondAdmin] = [...text.matchAll(/^\s+administrator\s+(\S+)$/gm)].map((m) => m[1]);
  const password = field('password');
  expect({ parent, staff, admin, secondAdmin, password }, text).toEqual({
    parent: expect.stringMatching(/^[^\s@]+@[^\s@]+$/),
    staff: expect.stringMatching(/^[^\s@]+@[^\s@]+$/),
    admin: expect.stringMatching(/^[^\s@]+@[^\s@]+$/),
    secondAdmin: expect.stringMatching(/^[^\s@]+@[^\s@]+$/),
    password: expect.stringMatching(/^\S{12,}$/),
  });
  return { parent: parent!, staff: staff!, admin: admin!, secondAdmin: secondAdmin!, password: password! };
}

function cookie(res: Response, name: string): string | undefined {
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const i = pair!.indexOf('=');
    if (pair!.slice(0, i).trim() === name) return pair!.slice(i + 1).trim();
  }
  return undefined;
}

const times: { start: string; listening: number; firstPage: number }[] = [];

// `npm start` always runs on the embedded database: the PGlite run covers it, the PostgreSQL run would repeat it.
describe.runIf(process.env.GUICHET_TEST_DB !== 'postgres')('npm start (guichet serve --demo)', () => {
  let dir: string;
  let first: DemoBlock;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'guichet-demo-start-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
    for (const t of times) {
      console.log(`[demo start] ${t.start}: "listening" after ${Math.round(t.listening)} ms, first 200 on / after ${Math.round(t.firstPage)} ms`);
    }
  });

  it('first start: builds the demo, prints the four accounts (two administrators: dual control) and a password, and serves it', async () => {
    const port = await freePort();
    const spawnedAt = performance.now();
    const s = start(startEnv({ GUICHET_DATA_DIR: dir, PORT: String(port) }), port);
    try {
      const [block, pageAfter] = await Promise.all([waitForBlock(s, 150_000), firstPage(s, spawnedAt, 150_000)]);
      expect(block, s.output()).not.toBeNull();
      times.push({ start: 'first start (builds the demo)', listening: s.listeningAfter()!, firstPage: pageAfter });
      const [, address, detail, printed] = block!;
      expect(address).toBe(`http://localhost:${port}`);
      expect(detail).toMatch(/^pglite, ready in [\d.]+ s$/);
      expect(printed).toContain('Demo mode');
      first = demoBlock(printed!);
      expect(new Set([first.parent, first.staff, first.admin, first.secondAdmin]).size).toBe(4);
      expect(printed).toContain('/demo/mail');

      const base = `http://127.0.0.1:${port}`;
      const home = await fetch(`${base}/`);
      expect(home.status).toBe(200);
      expect(home.headers.get('content-type')).toMatch(/^text\/html/);
      const homeHtml = await home.text();
      expect(homeHtml).toContain('<html lang="fr">');
      expect(homeHtml).toContain('Se connecter');

      const directory = await fetch(`${base}/directory`);
      expect(directory.status).toBe(200);
      const directoryHtml = await directory.text();
      expect(directoryHtml).toContain('592 services trouvés');
      expect(directoryHtml).toMatch(/<a href="\/directory\/[0-9a-f-]{36}">/);

      // Signing in as the printed parent, through the real form.
      const form = await fetch(`${base}/signin`);
      expect(form.status).toBe(200);
      const csrfCookie = cookie(form, 'guichet_csrf');
      expect(csrfCookie, 'guichet_csrf cookie').toBeTruthy();
      const token = /name="_csrf" value="([^"]+)"/.exec(await form.text())?.[1];
      expect(token, '_csrf field').toBeTruthy();
      const post = (password: string) =>
        fetch(`${base}/signin`, {
          method: 'POST',
          redirect: 'manual',
          headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: `guichet_csrf=${csrfCookie}` },
          body: new URLSearchParams({ _csrf: token!, email: first.parent, password }).toString(),
        });
      const wrong = await post(`${first.password}-wrong`);
      expect(wrong.status).toBe(401);
      expect(cookie(wrong, 'guichet_session')).toBeUndefined();
      await wrong.arrayBuffer();
      const signedIn = await post(first.password);
      expect(signedIn.status).toBe(303);
      expect(signedIn.headers.get('location')).toBe('/account');
      const session = cookie(signedIn, 'guichet_session');
      expect(session, 'guichet_session cookie').toBeTruthy();
      await signedIn.arrayBuffer();
      const account = await fetch(`${base}/account`, { headers: { cookie: `guichet_csrf=${csrfCookie}; guichet_session=${session}` } });
      expect(account.status).toBe(200);
      const accountHtml = await account.text();
      expect(accountHtml).toContain('Léa Tremblay');
      expect(accountHtml).not.toContain('action="/signin"');

      const mail = await fetch(`${base}/demo/mail`);
      expect(mail.status).toBe(200);
      const outbox = await mail.text();
      expect(outbox).toContain(first.admin);
      expect(outbox).toContain(first.secondAdmin);

      // The second programme, with rules of its own, answers on its own host name.
      expect(printed).toContain('Second programme');
      const second = await new Promise<string>((resolve, reject) => {
        get({ host: '127.0.0.1', port, path: '/', headers: { host: `municipal.localhost:${port}` } }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve(body));
        }).on('error', reject);
      });
      expect(second).toContain('Programme municipal (démo)');
    } finally {
      const e = await stop(s);
      expect(e.code, s.output()).toBe(0);
    }
  }, 180_000);

  it('second start: reuses the data directory and prints the same accounts and password', async () => {
    expect(first, 'the first start must have passed').toBeDefined();
    const port = await freePort();
    const spawnedAt = performance.now();
    const s = start(startEnv({ GUICHET_DATA_DIR: dir, PORT: String(port) }), port);
    try {
      const [block, pageAfter] = await Promise.all([waitForBlock(s, 90_000), firstPage(s, spawnedAt, 90_000)]);
      expect(block, s.output()).not.toBeNull();
      times.push({ start: 'second start (reuses the data)', listening: s.listeningAfter()!, firstPage: pageAfter });
      expect(demoBlock(block![3]!)).toEqual(first);
      // Nothing was imported or seeded again.
      const directory = await fetch(`http://127.0.0.1:${port}/directory`);
      expect(directory.status).toBe(200);
      expect(await directory.text()).toContain('592 services trouvés');
    } finally {
      const e = await stop(s);
      expect(e.code, s.output()).toBe(0);
    }
  }, 120_000);

  it('NODE_ENV=production without DATABASE_URL: no demo block, no password printed', async () => {
    expect(first, 'the first start must have passed').toBeDefined();
    const port = await freePort();
    // The same data directory: its demo credentials file exists, and still nothing of it is printed.
    const s = start(startEnv({ GUICHET_DATA_DIR: dir, PORT: String(port), NODE_ENV: 'production' }), port);
    try {
      const block = await waitForBlock(s, 90_000);
      if (block) {
        // It started (on the embedded database); the demo pages are not there either.
        const mail = await fetch(`http://127.0.0.1:${port}/demo/mail`);
        expect(mail.status).toBe(404);
        await mail.arrayBuffer();
      }
    } finally {
      await stop(s);
    }
    const out = s.output();
    expect(out).not.toContain('Demo mode');
    expect(out).not.toMatch(/^\s+password\s/m);
    expect(out).not.toContain(first.password);
  }, 120_000);

  it('serve without --demo on the embedded database: no demo block, and the outbox page does not exist', async () => {
    expect(first, 'the first start must have passed').toBeDefined();
    const port = await freePort();
    // The demo's data directory, its outbox full of sign-in links: without --demo none of it is served.
    const s = start(startEnv({ GUICHET_DATA_DIR: dir, PORT: String(port) }), port, ['serve']);
    try {
      await firstPage(s, performance.now(), 90_000);
      const mail = await fetch(`http://127.0.0.1:${port}/demo/mail`);
      expect(mail.status, s.output()).toBe(404);
      await mail.arrayBuffer();
      const home = await (await fetch(`http://127.0.0.1:${port}/`)).text();
      expect(home).not.toContain('/demo/mail');
    } finally {
      await stop(s);
    }
    expect(s.output()).not.toContain(first.password);
  }, 120_000);
});
