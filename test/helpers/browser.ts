/**
 * A real browser for the journey tests: Debian's Chromium driven by
 * playwright-core (never a downloaded browser), axe-core for accessibility,
 * and screenshots for the documentation.
 *
 * - launchBrowser() / closeBrowser(): the worker's Chromium for a test file;
 *   closing ends the file's contexts, and the worker's next file gets the same
 *   browser (starting one cost 2–4 s a file).
 * - newContext(): a browser context at 1200×900, French first. Create contexts
 *   through it (not browser.newContext()) so checkA11y() knows when JavaScript
 *   is off.
 * - checkA11y(page, label): axe with the WCAG 2.1 A/AA rules and the best
 *   practices; throws a readable list of every violation. Injected through
 *   the DevTools protocol, so the page keeps its real CSP; pages of a
 *   JavaScript-off context are checked on a faithful copy (see below).
 * - trackPageProblems() / assertNoPageProblems(): uncaught script errors and
 *   Content-Security-Policy violations, which a page must never produce.
 * - follow(page, action): runs an action that loads a new page (a click, a form
 *   submission) and waits for that page, returning its HTTP status.
 * - shot(page, name): docs/screenshots/<name>.png, only with GUICHET_SCREENSHOTS=1.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AxeResults, Result, RunOptions } from 'axe-core';
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from 'playwright-core';

export const CHROMIUM_PATH = '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export const VIEWPORT = { width: 1200, height: 900 };

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SCREENSHOT_DIR = join(ROOT, 'docs', 'screenshots');

/** The worker's browser, shared by the files it runs one after the other (vitest.config.ts: isolate false). */
let workerBrowser: Promise<Browser> | undefined;

export async function launchBrowser(): Promise<Browser> {
  const current = workerBrowser && (await workerBrowser.catch(() => undefined));
  if (!current?.isConnected()) workerBrowser = chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
  return workerBrowser!;
}

/** The end of a file: its contexts (pages, cookies, virtual authenticators) closed; the browser stays for the next. */
export async function closeBrowser(browser: Browser | undefined): Promise<void> {
  if (!browser) return;
  replays.delete(browser);
  await Promise.all(browser.contexts().map((c) => c.close().catch(() => undefined)));
}

/** Contexts created with JavaScript off: axe cannot run in their pages (see checkA11y). */
const noScriptContexts = new WeakSet<BrowserContext>();
/** Per browser, a JavaScript-enabled page where checkA11y replays no-JavaScript pages. */
interface Replay {
  page: Page;
  /** The document to serve for the next navigation. */
  next: { url: string; html: string } | null;
}
const replays = new WeakMap<Browser, Promise<Replay>>();

export async function newContext(browser: Browser, options: BrowserContextOptions = {}): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: VIEWPORT, locale: 'fr-CA', ...options });
  if (options.javaScriptEnabled === false) noScriptContexts.add(context);
  return context;
}

/* ------------------------------------------------------------------ problems */

const problems = new WeakMap<Page, string[]>();

/** Records uncaught script errors and CSP violations on this page, for assertNoPageProblems(). */
export function trackPageProblems(page: Page): void {
  if (problems.has(page)) return;
  const list: string[] = [];
  problems.set(page, list);
  page.on('pageerror', (err) => list.push(`script error at ${page.url()}: ${err.message}`));
  page.on('console', (msg) => {
    const text = msg.text();
    if (msg.type() === 'error' && /Content Security Policy/i.test(text)) list.push(`CSP violation at ${page.url()}: ${text}`);
  });
}

/** A new page in this context, with its problems tracked. */
export async function newPage(context: BrowserContext): Promise<Page> {
  const page = await context.newPage();
  trackPageProblems(page);
  return page;
}

export function assertNoPageProblems(page: Page, label: string): void {
  const list = problems.get(page);
  if (!list?.length) return;
  const found = list.splice(0);
  throw new Error(`${label}: the page reported ${found.length} problem(s):\n${found.map((p) => `  - ${p}`).join('\n')}`);
}

/* -------------------------------------------------------------------- pages */

/**
 * Runs an action that makes the page load another document (following a link,
 * submitting a form, even to the same URL) and waits until that document has
 * loaded. Returns the HTTP status of the final response (after redirects).
 */
export async function follow(page: Page, action: () => Promise<unknown>, timeout = 10_000): Promise<number> {
  const response = page.waitForResponse((r) => r.request().isNavigationRequest() && r.frame() === page.mainFrame() && (r.status() < 300 || r.status() >= 400), { timeout });
  const loaded = page.waitForEvent('load', { timeout });
  try {
    await action();
  } catch (err) {
    // The action failed (no such link…): nothing will load, and the waits must not outlive the test.
    response.catch(() => {});
    loaded.catch(() => {});
    throw err;
  }
  const [r] = await Promise.all([response, loaded]);
  return r.status();
}

/* --------------------------------------------------------------- axe-core */

/** The part of axe's browser global we call. */
interface AxeGlobal {
  document: unknown;
  axe?: { run(context: unknown, options: RunOptions): Promise<AxeResults> };
}

const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'];
const AXE_TIMEOUT_MS = 20_000;

let axeSource: string | undefined;
function axeScript(): string {
  axeSource ??= readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
  return axeSource;
}

async function runAxe(page: Page): Promise<AxeResults> {
  // Guichet's pages allow only scripts with the answer's nonce, so page.addScriptTag({ content })
  // (an inline <script>) is refused. page.evaluate() runs through the DevTools
  // protocol, which the page's CSP does not govern: axe gets in while the CSP
  // stays in force for everything else, so these tests also prove the pages
  // work under their real policy (no bypassCSP needed for axe).
  await page.evaluate(axeScript());
  const options: RunOptions = { runOnly: { type: 'tag', values: AXE_TAGS }, resultTypes: ['violations'] };
  const run = page.evaluate((opts) => {
    const g = globalThis as unknown as AxeGlobal;
    if (!g.axe) throw new Error('axe-core did not load');
    return g.axe.run(g.document, opts).then((r) => ({ ...r, passes: [], incomplete: [], inapplicable: [] }));
  }, options);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`axe did not finish within ${AXE_TIMEOUT_MS} ms on ${page.url()} (JavaScript off? create the context with newContext())`)), AXE_TIMEOUT_MS);
  });
  try {
    return await Promise.race([run, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * With JavaScript off, the page's timers never fire and axe.run() never
 * settles. So the page's document as the server sent it (no script ran on it)
 * is replayed at the same URL in a JavaScript-enabled context: the request for
 * the page is answered with that HTML, the stylesheet comes from the real
 * server (so contrast is measured on the real styles), and the page's own
 * script is refused so it cannot change the document. axe runs there.
 */
async function runAxeWithoutPageScript(page: Page): Promise<AxeResults> {
  const browser = page.context().browser();
  if (!browser) throw new Error('checkA11y: the page has no browser');
  let pending = replays.get(browser);
  if (!pending) {
    pending = (async () => {
      const context = await browser.newContext({ viewport: VIEWPORT, locale: 'fr-CA' });
      const replay: Replay = { page: await context.newPage(), next: null };
      await replay.page.route('**/*', (route) => {
        const req = route.request();
        const next = replay.next;
        if (req.isNavigationRequest()) {
          // Only the copied document, never the real page (which this context has no session for).
          if (next && req.url() === next.url) return route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: next.html });
          return route.abort();
        }
        if (req.resourceType() === 'script') return route.abort();
        return route.continue();
      });
      return replay;
    })();
    replays.set(browser, pending);
  }
  const replay = await pending;
  replay.next = { url: page.url().replace(/#.*$/, ''), html: await page.content() };
  try {
    await replay.page.goto(replay.next.url);
    return await runAxe(replay.page);
  } finally {
    replay.next = null;
  }
}

function describeViolation(v: Result): string {
  const targets = v.nodes.slice(0, 5).map((n) => n.target.map(String).join(' >>> '));
  const more = v.nodes.length > 5 ? ` (+${v.nodes.length - 5} more)` : '';
  const summary = v.nodes[0]?.failureSummary?.replace(/\s+/g, ' ').trim();
  return [
    `  - ${v.id} [${v.impact ?? 'n/a'}]: ${v.help}`,
    `      targets: ${targets.join(', ')}${more}`,
    ...(summary ? [`      first: ${summary}`] : []),
    `      see: ${v.helpUrl}`,
  ].join('\n');
}

/**
 * Runs axe-core (WCAG 2.0/2.1 A and AA, plus best practices) on the page as it
 * is now, and throws with every violation: rule, impact, target selectors,
 * help. `label` names the page in the message.
 */
export async function checkA11y(page: Page, label: string): Promise<void> {
  const results = noScriptContexts.has(page.context()) ? await runAxeWithoutPageScript(page) : await runAxe(page);
  const violations = results.violations;
  if (!violations.length) return;
  throw new Error(`axe: ${violations.length} accessibility violation(s) on "${label}" (${page.url()}):\n${violations.map(describeViolation).join('\n')}`);
}

/* -------------------------------------------------------------- screenshots */

export function screenshotsEnabled(): boolean {
  return process.env.GUICHET_SCREENSHOTS === '1';
}

/** Saves a full-page PNG to docs/screenshots/<name>.png when GUICHET_SCREENSHOTS=1; otherwise does nothing. */
export async function shot(page: Page, name: string): Promise<void> {
  if (!screenshotsEnabled()) return;
  if (!/^[a-z0-9][a-z0-9-]*$/.test(name)) throw new Error(`shot: use a plain file name such as 01-home, not ${JSON.stringify(name)}`);
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage: true, animations: 'disabled', caret: 'hide' });
}
