// `publish`: each request in a transaction of the program's own, on a client it checked out and began itself;
// pg-boss's insert runs on that client through the `db` option (an IDatabase whose executeSql is the client's
// query), so the jobs commit or roll back with the harness's business rows.
import pg from 'pg';
import { PgBoss } from 'pg-boss';

import { committed, refused, unknown } from '../harnessproc-js/protocol.mjs';
import { connection, jobOptions } from './options.mjs';

const TX_TIMEOUT_MS = 10_000; // well below the harness's 30 s reply timeout

export async function openPublisher({ dsn, application_name: app, config }) {
  const settings = connection(dsn, app, 2, config.statement_timeout_seconds);
  const pool = new pg.Pool({ ...settings, query_timeout: TX_TIMEOUT_MS });
  pool.on('error', () => {}); // an idle client that dies is dropped by the pool; the next request reconnects
  const boss = new PgBoss({ ...settings, max: 1, supervise: false, migrate: false }); // insert-only
  boss.on('error', () => {});
  await boss.start();
  // pg-boss stamps retries and the timeout on the row at insert: the consumer's budget travels with the job.
  const options = jobOptions(config);
  return {
    async publish({ mids, payloads, rollback, business, queue }) {
      let client;
      try {
        client = await pool.connect();
      } catch (err) {
        return refused(err);
      }
      let broken = false;
      try {
        await client.query('BEGIN');
        if (business) {
          await client.query(`INSERT INTO ${client.escapeIdentifier(business)} (mid) SELECT unnest($1::text[])`, [mids]);
        }
        const db = { executeSql: (text, values) => client.query(text, values) };
        await boss.insert(queue, payloads.map((p) => ({ data: { payload: p.toString('base64') }, ...options })), { db });
      } catch (err) {
        broken = true;
        await client.query('ROLLBACK').catch(() => {});
        return refused(err);
      } finally {
        if (broken) client.release(true);
      }
      try {
        await client.query(rollback ? 'ROLLBACK' : 'COMMIT');
        client.release();
        return committed();
      } catch (err) {
        client.release(true);
        return rollback ? refused(err) : unknown(err); // COMMIT was sent: it may have landed
      }
    },
    async close() {
      await boss.stop({ graceful: false }).catch(() => {});
      await pool.end().catch(() => {});
    },
  };
}
