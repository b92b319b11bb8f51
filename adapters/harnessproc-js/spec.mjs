// The WorkerSpec and ConsumerConfig the harness hands a process adapter (harness.worker.WorkerSpec,
// harness.adapter.ConsumerConfig), as harnessproc/spec.go reads them.
import { readFileSync } from 'node:fs';

// The real DSN travels in this variable (harness.worker.DSN_ENV): the spec file, kept as evidence, holds it masked.
export const DSN_ENV = 'OUTBOX_HARNESS_DSN';

// seed is a 64-bit integer, past what a JSON number keeps exactly in JavaScript: it is read from the text as a BigInt.
export function loadSpec(path) {
  const text = readFileSync(path, 'utf8');
  const spec = JSON.parse(text);
  const seed = /"seed"\s*:\s*(\d+)/.exec(text);
  spec.seed = seed ? BigInt(seed[1]) : null;
  if (process.env[DSN_ENV]) spec.dsn = process.env[DSN_ENV];
  spec.application_name ||= `harness-${spec.process}`;
  return spec;
}

// The single attempt budget of libraries that count every claim, crash reclaims included:
// min(retry.max_attempts, max_deliveries), 1 without retries.
export function attempts(config) {
  let n = config.retry.kind === 'none' ? 1 : Math.max(1, config.retry.max_attempts);
  if (config.max_deliveries != null) n = Math.min(n, Math.max(1, config.max_deliveries));
  return n;
}
