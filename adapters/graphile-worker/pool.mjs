// The node-postgres pool every graphile-worker call runs on: graphile-worker takes its LISTEN connection from the
// pool it is given, so application_name set here reaches every backend, and the pool's max bounds them all.
import pg from 'pg';

export const SCHEMA = 'graphile_worker';

// max_workers jobs each borrow a connection per statement; one is held for LISTEN, one more for the rest.
export const poolSize = (config) => config.pool_size ?? config.max_workers + 2;

export function newPool(dsn, applicationName, max, statementTimeoutSeconds = 0) {
  const settings = { connectionString: dsn, application_name: applicationName, max, connectionTimeoutMillis: 3000 };
  if (statementTimeoutSeconds > 0) settings.options = `-c statement_timeout=${Math.round(statementTimeoutSeconds * 1000)}`;
  const pool = new pg.Pool(settings);
  pool.on('error', () => {}); // an idle client that dies is dropped; the next checkout reconnects
  return pool;
}

const DRAIN_POLL_MS = 20;

// Ends the pool once nothing holds or waits for a connection (at most timeoutMs): graphile-worker does not await
// the write that fails or completes a job before its worker is released, so runner.stop() can return with it still
// on its way, and ending the pool at once would drop it and leave the job locked.
export async function endWhenIdle(pool, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while ((pool.totalCount > pool.idleCount || pool.waitingCount > 0) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
  }
  await pool.end();
}
