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
 *
 * Plans, too, are kept: PostgreSQL plans an unnamed statement anew each time
 * it is sent, and on the child-file page planning was most of the database's
 * work (pg_stat_statements, 64 connections: 1.8 ms of planning a page against
 * 0.4 ms of execution — the session's look-up alone 625 µs to plan, 38 µs to
 * run, row-level security's policies expanded into every plan). So a statement
 * is prepared once per connection (SQL PREPARE, its own round trip the first
 * time) and then sent as EXECUTE with its parameters as literals — which can
 * travel in one message with BEGIN, the settings and COMMIT, as the statement
 * did; after five executions PostgreSQL keeps a generic plan when it costs no
 * more than planning each time. Not prepared: statements whose result has a
 * `*` (a column added by a migration under a running server would change a
 * cached plan's result type, which PostgreSQL refuses), statements that are not
 * one SELECT, INSERT, UPDATE, DELETE, WITH or VALUES, and everything when
 * DATABASE_PREPARED_STATEMENTS=off (a pooler that hands each transaction a
 * different server connection, as PgBouncer's transaction mode does, loses
 * SQL-level prepared statements). A connection keeps at most
 * PREPARED_PER_CONNECTION of them, dropping the least recently used.
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

/** Statements a connection keeps prepared (each holds its plan in the server process). */
export const PREPARED_PER_CONNECTION = 200;

/**
 * The text without Guichet's markers, or null when it holds any other comment
 * (whose quotes and `$` a scan of the text would misread).
 */
function withoutMarkers(text: string): string | null {
  const bare = [HELD_UNTIL_NEXT, WRITE_HELD_UNTIL_NEXT, LAST_OF_TRANSACTION].reduce((t, m) => t.replaceAll(m, ''), text);
  return bare.includes('--') || bare.includes('/*') ? null : bare;
}

/** A `*` that stands for columns: `t.*`, or first in a select list, after a comma, after RETURNING. */
const STAR_COLUMNS = /\.\s*\*|(?:\bselect(?:\s+distinct|\s+all)?|\breturning|,)\s*\*/i;

/**
 * Whether a statement may be prepared: one statement (no `;`) of a kind
 * PREPARE takes, whose columns are not given by a `*` (see above; a product
 * or `count(*)` is no such `*`). Comments other than the markers make it
 * unpreparable, as they make it unscannable for withLiterals.
 */
export function preparable(text: string): boolean {
  if (text.includes(';')) return false;
  const bare = withoutMarkers(text);
  if (bare === null || STAR_COLUMNS.test(bare)) return false;
  return /^\s*(select|insert|update|delete|with|values)\b/i.test(bare);
}

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
  /** Statement text → the name it is prepared under on this connection, least recently used first. */
  readonly prepared = new Map<string, string>();
  #names = 0;
  constructor(
    readonly client: pg.PoolClient,
    readonly prepare: boolean,
  ) {}

  /**
   * The statement as `EXECUTE name(literals)`, preparing it on this connection
   * the first time (its own round trip: it either exists afterwards or not at
   * all, never in doubt after a failed message); null when it is not to be
   * prepared.
   */
  async execute(text: string, params: readonly unknown[]): Promise<string | null> {
    if (!this.prepare) return null;
    let name = this.prepared.get(text);
    if (name) {
      // Known, so preparable: the text's scan (a tenth of this function's time in a profile) is skipped.
      this.prepared.delete(text);
    } else {
      if (!preparable(text)) return null;
      name = `guichet_${++this.#names}`;
      let drop = '';
      if (this.prepared.size >= PREPARED_PER_CONNECTION) {
        const [oldest, oldName] = this.prepared.entries().next().value!;
        this.prepared.delete(oldest);
        drop = `deallocate ${oldName}; `;
      }
      // Outside the transaction when its BEGIN is still held; inside it otherwise (a PREPARE that fails there fails
      // the transaction, as the statement itself would have: both are parsed and analysed the same way).
      await this.client.query(`${drop}prepare ${name} as ${text}`);
    }
    this.prepared.set(text, name);
    return params.length ? `execute ${name}(${params.map(literal).join(', ')})` : `execute ${name}`;
  }

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
      const text = (write ? await this.execute(query.sql, query.parameters) : null) ?? (query.parameters.length ? withLiterals(query.sql, query.parameters) : query.sql);
      if (text !== null) {
        this.held.push(text);
        if (write) this.heldWrites = true;
        return { rows: [] };
      }
    }
    let text = query.sql;
    let params: readonly unknown[] = query.parameters;
    const commit = this.inTransaction && text.endsWith(LAST_OF_TRANSACTION);
    const execute = await this.execute(text, params);
    if (execute !== null) {
      text = execute;
      params = [];
    }
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
  if (withoutMarkers(text) === null) return null;
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
  constructor(
    private readonly pool: pg.Pool,
    private readonly prepare: boolean,
  ) {}

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    const client = await this.pool.connect();
    let c = this.#connections.get(client);
    if (!c) {
      c = new Connection(client, this.prepare);
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
  readonly #prepare: boolean;
  /** `prepare`: keep statements prepared on each connection (see above). */
  constructor(pool: pg.Pool, { prepare = true }: { prepare?: boolean } = {}) {
    super({ pool });
    this.#pool = pool;
    this.#prepare = prepare;
  }
  override createDriver(): Driver {
    return new HeldBeginDriver(this.#pool, this.#prepare);
  }
}
