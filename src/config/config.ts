import { z } from 'zod';

/**
 * Configuration is read once, at start, from the environment, and parsed into
 * types. An invalid value stops the process with a message that names the
 * variable, so an operator never has to guess which setting is wrong.
 */
const schema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  GUICHET_DATA_DIR: z.string().min(1).default('./data'),
  DATABASE_URL: z.string().url().optional(),
  /** Owner connection for migrations and tenant creation; defaults to DATABASE_URL. */
  DATABASE_OWNER_URL: z.string().url().optional(),
  /** off behind a pooler that gives each transaction a different server connection (PgBouncer's transaction mode). */
  DATABASE_PREPARED_STATEMENTS: z.enum(['on', 'off']).default('on'),
  SMTP_URL: z.string().url().optional(),
  MAIL_FROM: z.string().min(3).default('Guichet <no-reply@guichet.localhost>'),
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Public base URL used in links sent by e-mail, e.g. https://guichet.example.org */
  PUBLIC_URL: z.string().url().optional(),
  /** Tenant served when the request's host names no tenant. */
  GUICHET_DEFAULT_TENANT: z
    .string()
    .regex(/^[a-z0-9-]{2,40}$/)
    .default('quebec'),
  /** security.txt (RFC 9116): where to report a vulnerability — comma-separated mailto:, https: or tel: URIs. */
  GUICHET_SECURITY_CONTACT: z
    .string()
    .refine((v) => v.split(',').every((c) => /^(mailto:[^\s@,]+@[^\s@,]+|https:\/\/[^\s,]+|tel:\+?[0-9 -]+)$/.test(c.trim())), 'comma-separated mailto:, https: or tel: URIs')
    .optional(),
  /** security.txt: when its content stops being valid (ISO 8601 date-time); unset: 180 days after the start. */
  GUICHET_SECURITY_EXPIRES: z.string().datetime({ offset: true }).optional(),
  /** security.txt: the disclosure policy (https: URL); unset: the one Guichet serves at /security-policy.txt. */
  GUICHET_SECURITY_POLICY: z.string().url().startsWith('https://').optional(),
  /** security.txt: the OpenPGP key to encrypt reports with (https: URL), if any. */
  GUICHET_SECURITY_ENCRYPTION: z.string().url().startsWith('https://').optional(),
  /** Allow the app to connect as a superuser or table owner (never in production). */
  GUICHET_ALLOW_PRIVILEGED_DB_ROLE: z.enum(['0', '1']).default('0'),
  /** Redis for the counters every instance shares (sign-in throttle, detection windows); unset: PostgreSQL rows. */
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\/\S+$/, 'a redis:// or rediss:// URL')
    .optional(),
  /** Whether `guichet serve` runs the background work itself; off when `guichet worker` runs beside it. */
  GUICHET_JOBS: z.enum(['on', 'off']).default('on'),
  /** Bearer token for /metrics; unset: /metrics does not exist. */
  GUICHET_METRICS_TOKEN: z.string().min(16, 'at least 16 characters').optional(),
});

export interface Config {
  port: number;
  host: string;
  dataDir: string;
  databaseUrl: string | undefined;
  databaseOwnerUrl: string | undefined;
  /** Keep statements prepared on each PostgreSQL connection (DATABASE_PREPARED_STATEMENTS, on by default). */
  databasePreparedStatements: boolean;
  smtpUrl: string | undefined;
  mailFrom: string;
  production: boolean;
  logLevel: z.infer<typeof schema>['LOG_LEVEL'];
  publicUrl: string | undefined;
  defaultTenant: string;
  /** Demo mode: embedded database and no production flag. Prints demo sign-ins. */
  demo: boolean;
  allowPrivilegedDbRole: boolean;
  redisUrl: string | undefined;
  /** `guichet serve` runs the background work in its own process (GUICHET_JOBS=on). */
  jobsInServe: boolean;
  metricsToken: string | undefined;
  /** What /.well-known/security.txt says (src/web/security-txt.ts). */
  securityTxt: SecurityTxtConfig;
}

export interface SecurityTxtConfig {
  contacts: string[];
  expires: Date;
  /** null: the policy Guichet serves itself. */
  policy: string | null;
  encryption: string | null;
}

/** The reporting address when none is configured: security@ the domain mail is sent from. */
function defaultSecurityContact(mailFrom: string): string {
  const domain = /@([^\s>]+)>?\s*$/.exec(mailFrom)?.[1] ?? 'guichet.localhost';
  return `mailto:security@${domain}`;
}

export class ConfigError extends Error {
  constructor(readonly variable: string, message: string) {
    super(`Invalid configuration: ${variable}: ${message}`);
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(String(issue.path[0] ?? '?'), issue.message);
  }
  const e = parsed.data;
  const production = e.NODE_ENV === 'production';
  if (production && e.GUICHET_ALLOW_PRIVILEGED_DB_ROLE === '1') {
    throw new ConfigError('GUICHET_ALLOW_PRIVILEGED_DB_ROLE', 'must not be 1 when NODE_ENV=production');
  }
  return {
    port: e.PORT,
    host: e.HOST,
    dataDir: e.GUICHET_DATA_DIR,
    databaseUrl: e.DATABASE_URL,
    databaseOwnerUrl: e.DATABASE_OWNER_URL ?? e.DATABASE_URL,
    databasePreparedStatements: e.DATABASE_PREPARED_STATEMENTS === 'on',
    smtpUrl: e.SMTP_URL,
    mailFrom: e.MAIL_FROM,
    production,
    logLevel: e.LOG_LEVEL,
    publicUrl: e.PUBLIC_URL?.replace(/\/$/, ''),
    defaultTenant: e.GUICHET_DEFAULT_TENANT,
    demo: !production && !e.DATABASE_URL,
    allowPrivilegedDbRole: e.GUICHET_ALLOW_PRIVILEGED_DB_ROLE === '1',
    redisUrl: e.REDIS_URL,
    jobsInServe: e.GUICHET_JOBS === 'on',
    metricsToken: e.GUICHET_METRICS_TOKEN,
    securityTxt: {
      contacts: (e.GUICHET_SECURITY_CONTACT ?? defaultSecurityContact(e.MAIL_FROM)).split(',').map((c) => c.trim()),
      // The default moves with every start, so it vouches for no review of the file: production sets a date someone will keep.
      expires: e.GUICHET_SECURITY_EXPIRES ? new Date(e.GUICHET_SECURITY_EXPIRES) : new Date(Math.ceil(Date.now() / 86_400_000) * 86_400_000 + 180 * 86_400_000),
      policy: e.GUICHET_SECURITY_POLICY ?? null,
      encryption: e.GUICHET_SECURITY_ENCRYPTION ?? null,
    },
  };
}
