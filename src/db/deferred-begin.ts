/**
 * PostgreSQL through `pg`, with a transaction's BEGIN sent together with its
 * first statement when that statement is the tenant's settings (enterTenant):
 * one round trip instead of two for every tenant transaction.
 *
 * Why: on a server's two cores, each write to PostgreSQL's socket is where the
 * event loop loses the processor (a CPU profile of the child-file page under
 * 64 connections spent about half of the server's thread in `writev` to the
 * database), so a request's cost follows its number of round trips.
 *
 * Only a statement without parameters can ride with BEGIN (the simple query
 * protocol carries several statements; the extended one, one), and only one
 * whose rows nobody reads (a multi-statement answer gives Kysely no rows):
 * enterTenant's, recognised by its leading comment. Any other first statement
 * sends BEGIN on its own first, as Kysely's driver does. A transaction that
 * ends before its first statement sends nothing at all.
 */
import { CompiledQuery, PostgresDialect, PostgresDriver, type DatabaseConnection, type Driver, type QueryResult, type TransactionSettings } from 'kysely';

/** The comment that opens a statement which may carry its transaction's BEGIN (see enterTenant). */
export const RIDES_WITH_BEGIN = '/* guichet:tenant */';

class DeferredBeginDriver extends PostgresDriver {
  /** Connections inside a transaction whose BEGIN is not sent yet, with the BEGIN to send. */
  readonly #pending = new WeakMap<DatabaseConnection, string>();
  readonly #patched = new WeakSet<DatabaseConnection>();

  override async acquireConnection(): Promise<DatabaseConnection> {
    const connection = await super.acquireConnection();
    if (!this.#patched.has(connection)) {
      this.#patched.add(connection);
      const execute = connection.executeQuery.bind(connection);
      const stream = connection.streamQuery.bind(connection);
      const flush = async () => {
        const begin = this.#pending.get(connection);
        if (begin === undefined) return;
        this.#pending.delete(connection);
        await execute(CompiledQuery.raw(begin));
      };
      connection.executeQuery = async <R>(query: CompiledQuery): Promise<QueryResult<R>> => {
        const begin = this.#pending.get(connection);
        if (begin !== undefined && query.parameters.length === 0 && query.sql.startsWith(RIDES_WITH_BEGIN)) {
          this.#pending.delete(connection);
          return execute<R>(CompiledQuery.raw(`${begin}; ${query.sql}`));
        }
        await flush();
        return execute<R>(query);
      };
      connection.streamQuery = async function* <R>(query: CompiledQuery, chunkSize?: number) {
        await flush();
        yield* stream<R>(query, chunkSize);
      };
    }
    return connection;
  }

  override async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    let begin = 'begin';
    if (settings.isolationLevel || settings.accessMode) {
      begin = 'start transaction';
      if (settings.isolationLevel) begin += ` isolation level ${settings.isolationLevel}`;
      if (settings.accessMode) begin += ` ${settings.accessMode}`;
    }
    this.#pending.set(connection, begin);
  }

  override async commitTransaction(connection: DatabaseConnection): Promise<void> {
    if (this.#pending.delete(connection)) return; // nothing was sent: nothing to commit
    await super.commitTransaction(connection);
  }

  override async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    if (this.#pending.delete(connection)) return;
    await super.rollbackTransaction(connection);
  }
}

export class DeferredBeginDialect extends PostgresDialect {
  readonly #config: ConstructorParameters<typeof PostgresDialect>[0];
  constructor(config: ConstructorParameters<typeof PostgresDialect>[0]) {
    super(config);
    this.#config = config;
  }
  override createDriver(): Driver {
    return new DeferredBeginDriver(this.#config);
  }
}
