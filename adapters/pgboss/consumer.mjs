// `consume SPEC`: one PgBoss instance whose work() runs the harness handler, until SIGTERM; then
// stop({graceful: true, timeout: graceful_timeout}): fetching ends at once, running handlers get the timeout, and
// pg-boss fails what still runs then (an attempt spent) and aborts its signal.
import { PgBoss } from 'pg-boss';

import { connection, SUPERVISE_INTERVAL_S } from './options.mjs';

const MIN_POLL_S = 0.5; // pg-boss refuses faster polling

// The pool: max_workers handlers each hold a connection only for their fetch and settle; two more for the
// supervisor and the queue cache. LISTEN is one more connection, outside the pool.
export const poolSize = (config) => config.pool_size ?? config.max_workers + 2;

export async function consume(spec, handler, history) {
  const c = spec.config;
  const boss = new PgBoss({
    ...connection(spec.dsn, spec.application_name, poolSize(c), c.statement_timeout_seconds),
    migrate: false,
    supervise: true, // expiry of jobs whose worker died is this sweep's: every instance runs it
    superviseIntervalSeconds: SUPERVISE_INTERVAL_S,
    monitorIntervalSeconds: SUPERVISE_INTERVAL_S,
    useListenNotify: true,
  });
  boss.on('error', (err) => history.log('ERROR', 'pg-boss', err?.message ?? err));
  boss.on('warning', (w) => history.log('WARNING', 'pg-boss', w?.message ?? w));
  await boss.start();
  let stopping = false;
  const poll = Math.max(MIN_POLL_S, c.max_fetch_interval);
  // batchSize 1: a pg-boss worker runs its batch to the end before it fetches again, so a larger batch would
  // either hold fetched jobs back (serially) or run more than max_workers handlers (at once).
  await boss.work(c.queue, { localConcurrency: c.max_workers, batchSize: 1, includeMetadata: true,
    pollingIntervalSeconds: poll, notifyPollingIntervalSeconds: poll }, async ([job]) => {
    // started_on is set by job_now() (now()) in pg-boss's fetch statement; retry_count counts earlier starts.
    const call = { leaseAt: job.startedOn, delivery: job.retryCount + 1, key: job.id };
    await handler.handle(Buffer.from(job.data.payload, 'base64'), call, job.signal, () => !stopping);
  });
  return async () => {
    stopping = true;
    await boss.stop({ graceful: true, timeout: Math.max(1000, c.graceful_timeout * 1000) });
  };
}
