// harness.deliveries.DeliveryCounter: which delivery of a message this is, counted across every worker process,
// one byte appended per call under an exclusive flock(2) of a per-mid file. Node's core has no flock, so the
// append runs under util-linux's flock(1): the same lock the Python and Go counters take, released by the kernel
// when its holder dies, so a SIGKILL mid-count never leaves a lock behind.
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const APPEND_AND_SIZE = 'printf . >>"$1" && stat -c %s "$1"';

export class DeliveryCounter {
  constructor(dir) {
    mkdirSync(dir, { recursive: true });
    this.dir = dir;
  }

  // Counts one more delivery of mid and returns its number (1 for the first).
  async next(mid) {
    const path = join(this.dir, mid.replace(/[^A-Za-z0-9_.-]/g, '_'));
    const { stdout } = await run('flock', ['--exclusive', path, 'sh', '-c', APPEND_AND_SIZE, 'count', path]);
    return Number.parseInt(stdout, 10);
  }
}
