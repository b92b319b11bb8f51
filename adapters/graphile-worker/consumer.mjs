// `consume SPEC`: one graphile-worker runner whose one task (named after the queue) runs the harness handler,
// until SIGTERM; then runner.stop(): no new jobs, running ones get gracefulShutdownAbortTimeout
// (graceful_timeout) before their abortSignal fires, and a job whose handler then rejects is failed (an attempt
// spent, retried after graphile-worker's backoff).
import { Logger, run } from 'graphile-worker';

import { endWhenIdle, newPool, poolSize, SCHEMA } from './pool.mjs';

const SETTLE_TIMEOUT_MS = 5000; // for the last fail or complete writes after runner.stop()

const LEVELS = { error: 'ERROR', warning: 'WARNING' };

export async function consume(spec, handler, history) {
  const c = spec.config;
  const pgPool = newPool(spec.dsn, spec.application_name, poolSize(c), c.statement_timeout_seconds);
  // Its warnings and errors reach the history as log events; the rest is dropped.
  const logger = new Logger(() => (level, message) => {
    if (LEVELS[level]) history.log(LEVELS[level], 'graphile-worker', message);
  });
  let stopping = false;
  const runner = await run({
    pgPool,
    schema: SCHEMA,
    concurrency: c.max_workers,
    pollInterval: Math.max(1, Math.round(c.max_fetch_interval * 1000)),
    gracefulShutdownAbortTimeout: Math.max(1, Math.round(c.graceful_timeout * 1000)),
    noHandleSignals: true, // the harness's SIGTERM is handled by consume.mjs, which calls stop()
    logger,
    taskList: {
      [c.queue]: async (payload, helpers) => {
        const { job } = helpers;
        // locked_at is set by now() in graphile-worker's get_job; attempts counts every lock, this one included.
        const call = { leaseAt: job.locked_at, delivery: job.attempts, key: String(job.id) };
        await handler.handle(Buffer.from(payload.payload, 'base64'), call, helpers.abortSignal, () => !stopping);
      },
    },
  });
  return async () => {
    stopping = true;
    await runner.stop();
    await endWhenIdle(pgPool, SETTLE_TIMEOUT_MS);
  };
}
