#!/usr/bin/env node
// pgboss-adapter runs pg-boss under the outbox harness through the process contract of docs/adapters.md: `schema`
// and `state` answer one JSON request, `consume SPEC` runs one consumer and writes its history, `publish` serves
// the publisher's line protocol. Only pg-boss's public API is used.
import { runProgram } from '../harnessproc-js/program.mjs';
import { createSchema, readState } from './admin.mjs';
import { consume } from './consumer.mjs';
import { openPublisher } from './publisher.mjs';

await runProgram('pgboss-adapter', { createSchema, readState, openPublisher, consume });
