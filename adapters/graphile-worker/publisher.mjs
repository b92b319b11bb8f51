// `publish`: each request in a transaction of the program's own; the jobs are added with graphile-worker's
// add_job SQL function, its documented way to enqueue inside a transaction, so they (and the NOTIFY its trigger
// sends) commit or roll back with the harness's business rows.
import { committed, refused, unknown } from '../harnessproc-js/protocol.mjs';
import { attempts } from '../harnessproc-js/spec.mjs';
import { newPool, SCHEMA } from './pool.mjs';

const TX_TIMEOUT_MS = 10_000; // well below the harness's 30 s reply timeout

export async function openPublisher({ dsn, application_name: app, config }) {
  const pool = newPool(dsn, app, 2, config.statement_timeout_seconds);
  // max_attempts is stamped on the row at insert: the consumer's budget travels with the job.
  const maxAttempts = attempts(config);
  return {
    async publish({ mids, payloads, rollback, business, queue }) {
      let client;
      try {
        client = await pool.connect();
      } catch (err) {
        return refused(err);
      }
      const query = (text, values) => client.query({ text, values, query_timeout: TX_TIMEOUT_MS });
      try {
        await query('BEGIN');
        if (business) await query(`INSERT INTO ${client.escapeIdentifier(business)} (mid) SELECT unnest($1::text[])`, [mids]);
        await query(`SELECT ${SCHEMA}.add_job($1, json_build_object('payload', p), max_attempts => $2)
                       FROM unnest($3::text[]) WITH ORDINALITY AS t(p, n) ORDER BY n`,
        [queue, maxAttempts, payloads.map((p) => p.toString('base64'))]);
      } catch (err) {
        await query('ROLLBACK').catch(() => {});
        client.release(true);
        return refused(err);
      }
      try {
        await query(rollback ? 'ROLLBACK' : 'COMMIT');
        client.release();
        return committed();
      } catch (err) {
        client.release(true);
        return rollback ? refused(err) : unknown(err); // COMMIT was sent: it may have landed
      }
    },
    async close() {
      await pool.end().catch(() => {});
    },
  };
}
