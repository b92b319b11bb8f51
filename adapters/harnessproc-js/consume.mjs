// The `consume SPEC` entry point (harnessproc/worker.go): opens the history, records the worker's lifecycle and
// runs the library's consumer until SIGTERM or SIGINT, then lets it drain.
import { DeliveryCounter } from './deliveries.mjs';
import { Handler } from './handler.mjs';
import { History } from './history.mjs';
import { loadSpec } from './spec.mjs';

export const EXIT_REFUSED = 3; // harness.worker.EXIT_REFUSED

// run(spec, handler, history, stopping) starts the consumer and returns its stop(); stopping is a promise that
// resolves on SIGTERM or SIGINT. Returns the exit code.
export async function consume(specPath, run) {
  const spec = loadSpec(specPath);
  const history = new History(spec.history, spec.process);
  const handler = new Handler(history, spec.handler, spec.deliveries ? new DeliveryCounter(spec.deliveries) : null, spec.seed);
  const stopping = new Promise((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  history.record('info', 'worker', { event: 'started', process: spec.process, pid: process.pid });
  let stop;
  try {
    stop = await run(spec, handler, history, stopping);
  } catch (err) {
    history.record('info', 'worker', { event: 'refused', process: spec.process, message: String(err?.message ?? err) });
    history.close();
    return EXIT_REFUSED;
  }
  await stopping;
  try {
    await stop();
  } catch (err) {
    history.log('ERROR', 'harnessproc', `the consumer did not stop cleanly: ${err?.message ?? err}`);
  }
  history.record('info', 'worker', { event: 'exited', process: spec.process });
  history.close();
  return 0;
}
