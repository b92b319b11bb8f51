// The one-shot subcommands: `schema` (graphile-worker has no uninstall: its docs reset it by dropping its schema,
// then runMigrations) and `state` (graphile-worker has no listing API, and its public jobs view has no payload, so
// the state reads the job table the view is built on).
import { runMigrations } from 'graphile-worker';

import { newPool, SCHEMA } from './pool.mjs';

async function withPool(dsn, applicationName, run) {
  const pool = newPool(dsn, applicationName, 2);
  try {
    return await run(pool);
  } finally {
    await pool.end();
  }
}

export async function createSchema({ dsn }) {
  await withPool(dsn, 'harness-schema', async (pgPool) => {
    await pgPool.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    await runMigrations({ pgPool, schema: SCHEMA });
  });
  return { ok: true };
}

// Completed jobs are deleted. A job whose attempts are spent and that nobody holds has failed for good: dead.
// Every other job (waiting, retrying, locked) is pending.
export async function readState({ dsn }) {
  const { rows } = await withPool(dsn, 'harness-state', (pool) => pool.query(
    `SELECT payload->>'payload' AS payload, attempts >= max_attempts AND locked_at IS NULL AS dead
       FROM ${SCHEMA}._private_jobs ORDER BY id`));
  return { pending: rows.filter((r) => !r.dead).map((r) => r.payload), dead: rows.filter((r) => r.dead).map((r) => r.payload) };
}
