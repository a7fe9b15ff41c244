/**
 * PostgreSQL through `pg`, with fewer round trips per transaction: BEGIN, the
 * tenant's settings (enterTenant) and the first statement that reads travel
 * together as one simple-protocol message, and a statement marked as its
 * transaction's last carries COMMIT with it.
 *
 * Why: on a server's two cores each write to PostgreSQL's socket is where the
 * event loop loses the processor, and the database's process pays as much on
 * its side (a CPU profile of the child-file page under 64 connections spent
 * about half of the server's thread in `writev` to the database, and the
 * database sessions sat idle in transaction, waiting for it). A request's cost
 * follows its number of round trips: every tenant transaction opened with
 * three (BEGIN, settings, first statement) and now opens with one; the
 * session's look-up, a transaction of one statement, is one round trip.
 *
 * How: BEGIN and the settings — statements whose answers nobody reads — are
 * held back until the next statement, and sent before it in the same message.
 * The simple protocol takes no parameters, so that next statement's are
 * written into it as literals, each escaped by `pg` itself (escapeLiteral, on
 * the very text `pg` would have sent as the parameter); where its text gives
 * any doubt about what a `$` is (a quoted `$`, a dollar-quoted string, a
 * backslash), the held statements go first, on their own, and the statement
 * goes with its parameters, as before. A transaction that ends before its
 * first statement sends nothing at all. In a message, a statement that fails
 * stops the ones after it (COMMIT included): the transaction is then rolled
 * back as any other.
 */
import { PostgresDialect, type CompiledQuery, type DatabaseConnection, type Driver, type QueryResult, type TransactionSettings } from 'kysely';
import pg from 'pg';
import pgUtils from 'pg/lib/utils.js';

/** The comment that opens a statement whose answer nobody reads, which may wait for the next (see enterTenant). */
export const HELD_UNTIL_NEXT = '/* guichet:held */';

/**
 * The comment that ends a write whose answer nobody reads (an audit event): it
 * waits, as the settings do, for the transaction's next statement or for its
 * COMMIT, and goes in the same message, before it. Every later statement sees
 * it, as if sent at once; if it fails, the statement it went with fails, and
 * the transaction is rolled back.
 */
export const WRITE_HELD_UNTIL_NEXT = '/* guichet:held-write */';

/**
 * The comment that ends a transaction's last statement: COMMIT travels with it,
 * so a transaction of one statement takes one round trip. After it, the
 * transaction is over: another statement in it is refused.
 */
export const LAST_OF_TRANSACTION = '/* guichet:last */';

type PgResult = pg.QueryResult<Record<string, unknown>>;

class Connection implements DatabaseConnection {
  /** Statements held back (BEGIN first), to be sent before the next one, in the same message. */
  held: string[] = [];
  /** Whether a held statement is a write (which COMMIT must carry), not only BEGIN and settings. */
  heldWrites = false;
  /** Whether BEGIN has gone to the server (a rollback is then owed if the transaction fails). */
  begun = false;
  /** Whether the transaction was committed with its last statement. */
  committed = false;
  /** Inside a transaction (from BEGIN, held or sent, to its end). */
  inTransaction = false;
  constructor(readonly client: pg.PoolClient) {}

  reset(inTransaction: boolean, begin?: string): void {
    this.held = begin ? [begin] : [];
    this.heldWrites = false;
    this.begun = false;
    this.committed = false;
    this.inTransaction = inTransaction;
  }

  /** Sends one message; inside a transaction, BEGIN is in it or went before it. */
  async send(text: string, params?: readonly unknown[]): Promise<PgResult[]> {
    if (this.inTransaction) this.begun = true;
    const answer = (await this.client.query(text, params?.length ? [...params] : undefined)) as PgResult | PgResult[];
    return Array.isArray(answer) ? answer : [answer];
  }

  /** The held statements, emptied, as the text to put before the next one. */
  takeHeld(): string {
    const before = this.held.join('; ');
    this.held = [];
    this.heldWrites = false;
    return before;
  }

  async executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    if (this.committed) throw new Error('this transaction was committed with its last statement');
    const settings = query.sql.startsWith(HELD_UNTIL_NEXT);
    const write = !settings && query.sql.endsWith(WRITE_HELD_UNTIL_NEXT);
    if (this.inTransaction && (settings || write)) {
      const text = query.parameters.length ? withLiterals(query.sql, query.parameters) : query.sql;
      if (text !== null) {
        this.held.push(text);
        if (write) this.heldWrites = true;
        return { rows: [] };
      }
    }
    let text = query.sql;
    let params: readonly unknown[] = query.parameters;
    const commit = this.inTransaction && text.endsWith(LAST_OF_TRANSACTION);
    if (this.held.length || commit) {
      const inlined = params.length ? withLiterals(text, params) : text;
      const before = this.takeHeld();
      if (inlined === null) {
        if (before) await this.send(before);
      } else {
        text = [before, inlined, commit ? 'commit' : ''].filter(Boolean).join('; ');
        params = [];
      }
    }
    const results = await this.send(text, params);
    // With COMMIT sent along, the statement's answer is the one before COMMIT's.
    const committed = commit && params.length === 0 && results.length > 1 && results[results.length - 1]!.command === 'COMMIT';
    if (committed) this.committed = true;
    const last = results[results.length - (committed ? 2 : 1)]!;
    return {
      numAffectedRows: ['INSERT', 'UPDATE', 'DELETE', 'MERGE'].includes(last.command) ? BigInt(last.rowCount ?? 0) : undefined,
      rows: (last.rows ?? []) as R[],
    };
  }

  // eslint-disable-next-line require-yield
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('streaming queries are not used by Guichet');
  }
}

/**
 * The statement with its parameters written in as literals, or null when its
 * text does not say plainly where each parameter is: a `$` inside quotes, a
 * dollar-quoted string, a backslash (an escape string) or a comment (whose
 * quotes the scan below would misread) anywhere but Guichet's own markers.
 */
export function withLiterals(text: string, params: readonly unknown[]): string | null {
  if (text.includes('\\')) return null;
  const bare = [HELD_UNTIL_NEXT, WRITE_HELD_UNTIL_NEXT, LAST_OF_TRANSACTION].reduce((t, m) => t.replaceAll(m, ''), text);
  if (bare.includes('--') || bare.includes('/*')) return null;
  let out = '';
  let quote: string | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === '$') return null;
      if (c === quote) quote = null; // a doubled quote closes and reopens: the same to this scan
      out += c;
      continue;
    }
    if (c === "'" || c === '"') {
      quote = c;
      out += c;
      continue;
    }
    if (c === '$') {
      const m = /^\$(\d+)/.exec(text.slice(i));
      if (!m) return null;
      const n = Number(m[1]);
      if (n < 1 || n > params.length) return null;
      out += literal(params[n - 1]);
      i += m[0].length - 1;
      continue;
    }
    out += c;
  }
  return quote ? null : out;
}

/** What `pg` would send for the value as a parameter, as a literal of unknown type, as a parameter is. */
function literal(value: unknown): string {
  const v: unknown = pgUtils.prepareValue(value);
  if (v === null || v === undefined) return 'NULL';
  if (Buffer.isBuffer(v)) return pg.escapeLiteral(`\\x${v.toString('hex')}`);
  return pg.escapeLiteral(String(v));
}

class HeldBeginDriver implements Driver {
  readonly #connections = new WeakMap<pg.PoolClient, Connection>();
  constructor(private readonly pool: pg.Pool) {}

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    const client = await this.pool.connect();
    let c = this.#connections.get(client);
    if (!c) {
      c = new Connection(client);
      this.#connections.set(client, c);
    }
    c.reset(false);
    return c;
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    let begin = 'begin';
    if (settings.isolationLevel || settings.accessMode) {
      begin = 'start transaction';
      if (settings.isolationLevel) begin += ` isolation level ${settings.isolationLevel}`;
      if (settings.accessMode) begin += ` ${settings.accessMode}`;
    }
    (connection as Connection).reset(true, begin);
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    const c = connection as Connection;
    const done = c.committed;
    // Held writes go with COMMIT; BEGIN and settings alone, never sent, leave nothing to commit.
    const needed = !done && (c.begun || c.heldWrites);
    const before = c.takeHeld();
    // If this fails (a held write refused), the transaction is still open on the server: the rollback that
    // follows is owed and sent.
    if (needed) await c.send(before ? `${before}; commit` : 'commit');
    c.reset(false);
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    const c = connection as Connection;
    const owed = c.begun && !c.committed;
    c.reset(false);
    if (owed) await c.client.query('rollback');
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    const c = connection as Connection;
    c.reset(false);
    c.client.release();
  }

  async destroy(): Promise<void> {
    await this.pool.end();
  }
}

/** Kysely's PostgreSQL dialect (its compiler, adapter and introspector) over the driver above. */
export class HeldBeginDialect extends PostgresDialect {
  readonly #pool: pg.Pool;
  constructor(pool: pg.Pool) {
    super({ pool });
    this.#pool = pool;
  }
  override createDriver(): Driver {
    return new HeldBeginDriver(this.#pool);
  }
}
