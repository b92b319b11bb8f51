// The history file of one process (harness/history.py): one compact JSON line per event, keys in the order
// t, wall, process, type, f, value, each written with a single write(2) to a file opened for append, so a SIGKILL
// tears at most the last line.
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';

// process.hrtime is CLOCK_MONOTONIC on Linux, the clock of Python's time.monotonic(): every process on the host
// shares it, so the runner merges histories by it.
export function monotonic() {
  return Number(process.hrtime.bigint()) / 1e9;
}

export class History {
  constructor(path, process) {
    this.fd = openSync(path, 'a');
    this.process = process;
  }

  // type: invoke | ok | fail | info; f: the operation (deliver, settle, worker, log, ...).
  record(type, f, value = {}) {
    let line;
    try {
      line = JSON.stringify({ t: monotonic(), wall: Date.now() / 1000, process: this.process, type, f, value });
    } catch (err) {
      line = JSON.stringify({ t: monotonic(), wall: Date.now() / 1000, process: this.process, type: 'info', f: 'log',
        value: { level: 'ERROR', logger: 'harnessproc', message: `unencodable event: ${err.message}` } });
    }
    writeSync(this.fd, line + '\n');
  }

  // A log event the harness counts (D8: one warning per LISTEN outage); level WARNING or ERROR.
  log(level, logger, message) {
    this.record('info', 'log', { level, logger, message: String(message) });
  }

  close() {
    fsyncSync(this.fd);
    closeSync(this.fd);
  }
}
