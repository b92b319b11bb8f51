#!/usr/bin/env node
// graphile-worker-adapter runs graphile-worker under the outbox harness through the process contract of
// docs/adapters.md: `schema` and `state` answer one JSON request, `consume SPEC` runs one consumer and writes its
// history, `publish` serves the publisher's line protocol. graphile-worker's public API and its documented SQL
// (add_job) are used, except that the state reads its job table: no public call lists jobs with their payload.
import { runProgram } from '../harnessproc-js/program.mjs';
import { createSchema, readState } from './admin.mjs';
import { consume } from './consumer.mjs';
import { openPublisher } from './publisher.mjs';

await runProgram('graphile-worker-adapter', { createSchema, readState, openPublisher, consume });
