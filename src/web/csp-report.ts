import type { FastifyInstance } from 'fastify';
import { Counter } from 'prom-client';
import { registry } from './metrics.ts';

/**
 * Content-Security-Policy violation reports (ASVS 3.4.7). Every page's policy
 * names this endpoint (`report-uri`), so a browser that blocks a script, a
 * style or a frame tells us at once: an injection that got as far as a page, a proxy or an
 * extension rewriting it, or a policy that is wrong. Nothing here needs a
 * tenant, a session or a CSRF token (browsers send them without), so the
 * endpoint reads nothing from the database and writes nothing there.
 *
 * A report is the browser's word, not ours: only what is useful and cannot
 * carry a family's data is kept — the directive, the page's path (never its
 * query), the blocked resource's origin or keyword (inline, eval) and the
 * source file's path. Each is counted in `guichet_csp_violations_total` by
 * directive; the log gets at most LOG_PER_MINUTE of them a minute per
 * process, so a flood of forged reports costs a little CPU and no disk.
 */
export const CSP_REPORT_PATH = '/csp-report';
const MAX_BODY = 16 * 1024;
const LOG_PER_MINUTE = 30;
const DIRECTIVES = new Set(['default-src', 'script-src', 'script-src-elem', 'script-src-attr', 'style-src', 'style-src-elem', 'style-src-attr', 'img-src', 'font-src', 'connect-src', 'form-action', 'frame-ancestors', 'base-uri', 'object-src', 'frame-src', 'child-src', 'worker-src', 'media-src', 'manifest-src']);

const violations = new Counter({
  name: 'guichet_csp_violations_total',
  help: 'Content-Security-Policy violations reported by browsers, by directive (other: a directive Guichet does not set, or none given).',
  labelNames: ['directive'] as const,
  registers: [registry],
});

export interface CspViolation {
  directive: string;
  /** The page's path, without its query. */
  page: string | null;
  /** The blocked resource: an origin, or the browser's keyword (inline, eval, data…). */
  blocked: string | null;
  /** The file the violation came from, path only, and its line. */
  source: string | null;
  disposition: 'enforce' | 'report';
}

function str(v: unknown, max = 2048): string | null {
  return typeof v === 'string' && v.length > 0 ? v.slice(0, max) : null;
}

function pathOf(raw: string | null): string | null {
  if (!raw) return null;
  try {
    return new URL(raw, 'http://x').pathname.slice(0, 200);
  } catch {
    return null;
  }
}

function blockedOf(raw: string | null): string | null {
  if (!raw) return null;
  if (/^[a-z-]{1,20}$/.test(raw)) return raw;
  try {
    const u = new URL(raw);
    return u.origin !== 'null' ? u.origin.slice(0, 200) : `${u.protocol}`;
  } catch {
    return 'other';
  }
}

function directiveOf(raw: string | null): string {
  const d = (raw ?? '').trim().split(/\s+/)[0]!.toLowerCase();
  return DIRECTIVES.has(d) ? d : 'other';
}

/** The violations a report body holds, in either format (report-uri's `csp-report` object, or the Reporting API's list, which a proxy may forward). */
export function readViolations(body: unknown): CspViolation[] {
  const one = (r: Record<string, unknown>, legacy: boolean): CspViolation => {
    const line = legacy ? r['line-number'] : r.lineNumber;
    const source = pathOf(str(legacy ? r['source-file'] : r.sourceFile));
    return {
      directive: directiveOf(str(legacy ? (r['effective-directive'] ?? r['violated-directive']) : r.effectiveDirective, 100)),
      page: pathOf(str(legacy ? r['document-uri'] : r.documentURL)),
      blocked: blockedOf(str(legacy ? r['blocked-uri'] : r.blockedURL)),
      source: source && Number.isInteger(line) ? `${source}:${line}` : source,
      disposition: r.disposition === 'report' ? 'report' : 'enforce',
    };
  };
  if (Array.isArray(body)) {
    return body
      .slice(0, 50)
      .filter((x): x is { type: string; body: Record<string, unknown> } => !!x && typeof x === 'object' && (x as { type?: unknown }).type === 'csp-violation' && !!(x as { body?: unknown }).body && typeof (x as { body?: unknown }).body === 'object')
      .map((x) => one(x.body, false));
  }
  if (body && typeof body === 'object' && 'csp-report' in body) {
    const r = (body as Record<string, unknown>)['csp-report'];
    if (r && typeof r === 'object' && !Array.isArray(r)) return [one(r as Record<string, unknown>, true)];
  }
  return [];
}

export function cspReportRoutes(app: FastifyInstance): void {
  let minute = 0;
  let logged = 0;
  void app.register(async (scope) => {
    // Report bodies only, in this scope: the pages themselves still refuse JSON.
    scope.addContentTypeParser(['application/csp-report', 'application/reports+json', 'application/json'], { parseAs: 'string', bodyLimit: MAX_BODY }, (_req, body, done) => {
      try {
        done(null, JSON.parse(body as string));
      } catch {
        const err = new Error('not JSON') as Error & { statusCode: number };
        err.statusCode = 400;
        done(err, undefined);
      }
    });
    scope.post(CSP_REPORT_PATH, { config: { csrf: false }, bodyLimit: MAX_BODY }, async (req, reply) => {
      // A form body would be parsed by the pages' parser: reports come as JSON only.
      if (!/^application\/(csp-report|reports\+json|json)\s*(;|$)/i.test(req.headers['content-type'] ?? '')) return reply.code(415).type('text/plain; charset=utf-8').send('Unsupported Media Type');
      const found = readViolations(req.body);
      for (const v of found) violations.inc({ directive: v.directive });
      const m = Math.floor(Date.now() / 60_000);
      if (m !== minute) {
        minute = m;
        logged = 0;
      }
      for (const v of found) {
        if (logged >= LOG_PER_MINUTE) break;
        logged++;
        req.log.warn({ csp: v, host: str(req.headers.host, 200) }, 'content security policy violation reported');
      }
      return reply.code(204).header('cache-control', 'no-store').send();
    });
  });
}
