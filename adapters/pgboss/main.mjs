#!/usr/bin/env node
// pgboss-adapter runs pg-boss under the outbox harness through the process contract of docs/adapters.md: `schema`
// and `state` answer one JSON request, `consume SPEC` runs one consumer and writes its history, `publish` serves
// the publisher's line protocol. Only pg-boss's public API is used.
import { consume as runConsumer } from '../harnessproc-js/consume.mjs';
import { command, servePublisher } from '../harnessproc-js/protocol.mjs';
import { createSchema, readState } from './admin.mjs';
import { consume } from './consumer.mjs';
import { openPublisher } from './publisher.mjs';

const [sub, ...args] = process.argv.slice(2);
const USAGE = 'usage: pgboss-adapter schema|state|publish|consume SPEC';

async function main() {
  switch (sub) {
    case 'schema': return command(createSchema);
    case 'state': return command(readState);
    case 'publish': await servePublisher(openPublisher); return 0;
    case 'consume':
      if (args.length !== 1) break;
      return runConsumer(args[0], consume);
    default:
  }
  process.stderr.write(USAGE + '\n');
  return 2;
}

process.exit(await main()); // pg-boss may leave timers behind: the subcommand is done
