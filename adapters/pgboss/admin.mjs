// The one-shot subcommands: `schema` (pg-boss's own uninstall plans, then its migrations and createQueue) and
// `state` (getQueues and findJobs).
import pg from 'pg';
import { getUninstallPlans, PgBoss } from 'pg-boss';

import { connection, deadLetterOf, jobOptions, SCHEMA } from './options.mjs';

async function withBoss(dsn, applicationName, options, run) {
  const boss = new PgBoss({ ...connection(dsn, applicationName, 2), supervise: false, ...options });
  boss.on('error', () => {}); // a one-shot command reports its failure through the rejected call
  await boss.start();
  try {
    return await run(boss);
  } finally {
    await boss.stop({ graceful: false });
  }
}

export async function createSchema({ dsn, config }) {
  const client = new pg.Client({ connectionString: dsn, application_name: 'harness-schema' });
  await client.connect();
  try {
    await client.query(getUninstallPlans(SCHEMA));
  } finally {
    await client.end();
  }
  await withBoss(dsn, 'harness-schema', { migrate: true }, async (boss) => {
    const options = { ...jobOptions(config), notify: true };
    if (config.dlq) await boss.createQueue(deadLetterOf(config.queue), { retryLimit: 0, notify: false });
    await boss.createQueue(config.queue, options);
  });
  return { ok: true };
}

const PAGE = 100_000;

async function* jobsOf(boss, queue) {
  let after;
  for (;;) {
    const page = await boss.findJobs(queue, { limit: PAGE, ...(after ? { after } : {}) });
    yield* page;
    if (page.length < PAGE) return;
    after = page[page.length - 1].id;
  }
}

// Completed jobs are done. Every job of a dead-letter queue is dead, and so are failed and cancelled jobs of a
// queue without one (a failed job of a queue with one is dead already, as its copy there). Every other state
// (created, retry, active) is pending.
export async function readState({ dsn }) {
  const state = { pending: [], dead: [] };
  await withBoss(dsn, 'harness-state', { migrate: false }, async (boss) => {
    const queues = await boss.getQueues();
    const deadLetters = new Set(queues.map((q) => q.deadLetter).filter(Boolean));
    for (const queue of queues) {
      for await (const job of jobsOf(boss, queue.name)) {
        const payload = job.data?.payload ?? '';
        if (deadLetters.has(queue.name)) state.dead.push(payload);
        else if (job.state === 'cancelled' || (job.state === 'failed' && !job.deadLetter)) state.dead.push(payload);
        else if (job.state !== 'completed' && job.state !== 'failed') state.pending.push(payload);
      }
    }
  });
  return state;
}
