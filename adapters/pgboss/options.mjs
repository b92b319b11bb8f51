// The harness's ConsumerConfig as pg-boss options: connection settings for every PgBoss instance, and the queue
// and job options that carry retries, the job timeout and the dead-letter queue.
import { attempts } from '../harnessproc-js/spec.mjs';

export const SCHEMA = 'pgboss';
export const SUPERVISE_INTERVAL_S = 1; // the least pg-boss accepts: expired jobs are failed within a second

// The dead-letter queue of queue: pg-boss copies a job there once its retries are spent.
export const deadLetterOf = (queue) => `${queue}.dead`;

// Every connection, the LISTEN one included (pg-boss builds it from the same config), carries application_name.
export function connection(dsn, applicationName, max, statementTimeoutSeconds = 0) {
  const options = { connectionString: dsn, application_name: applicationName, max, connectionTimeoutMillis: 3000,
    schema: SCHEMA, openTelemetry: { enabled: false }, registerInstance: false, schedule: false };
  if (statementTimeoutSeconds > 0) options.options = `-c statement_timeout=${Math.round(statementTimeoutSeconds * 1000)}`;
  return options;
}

// pg-boss counts every start of a job as an attempt (retry_count goes up at each fetch after the first, expiries
// included), so one budget: retryLimit = attempts - 1. Its delays are whole seconds; its backoff is its own
// (base × 2^n/2 × (1 + random()), base at least 1 s), so an exponential RetryConfig keeps only its first delay and cap.
export function jobOptions(config) {
  const { retry } = config;
  const options = { retryLimit: attempts(config) - 1, expireInSeconds: expireInSeconds(config) };
  if (retry.kind === 'constant') Object.assign(options, { retryDelay: Math.round(retry.initial_delay_seconds), retryBackoff: false });
  if (retry.kind === 'exponential') {
    Object.assign(options, { retryDelay: Math.max(1, Math.round(retry.initial_delay_seconds)), retryBackoff: true,
      retryDelayMax: Math.max(1, Math.ceil(retry.max_delay_seconds)) });
  }
  if (config.dlq) options.deadLetter = deadLetterOf(config.queue);
  return options;
}

// expireInSeconds is pg-boss's job timeout, a whole number of seconds, at least 1: the handler is abandoned (its
// signal aborted) and the job failed at it, and the supervisor fails a dead worker's job once it has passed.
export function expireInSeconds(config) {
  return Math.max(1, Math.ceil(config.lease_ttl_seconds));
}
