// The harness handler (harness.worker; harnessproc/handler.go): records the call, sleeps the scenario's duration
// (or the script's), fails poison and scripted failures. A call cut off by a hard stop gets no completion (the
// process exits next); one the library times out while the process lives is a deliver fail, error "timeout".
import { decodePayload } from './payload.mjs';
import { PCG, randomSeed } from './random.mjs';

class HandlerFailure extends Error {}

// Echoed by every completion, so the checkers can tell two calls of one mid apart. leaseAt: a Date by the
// database clock, only if it really is the lease start; delivery: the library's claim count (0: unknown).
function callValues({ leaseAt = null, delivery = 0 }) {
  return { lease_at: leaseAt ? leaseAt.getTime() / 1000 : null, delivery: delivery > 0 ? delivery : null };
}

// Duration in ms of call number call (1-based) of this process, drawn from (seed, call) as harnessproc does, so a
// run with the same seed replays whatever order concurrent calls take; a null seed draws at random.
export function duration(spec, call, seed) {
  const r = new PCG(seed ?? randomSeed(), call);
  if (call <= (spec.slow_first ?? 0) || (spec.slow_fraction > 0 && r.float64() < spec.slow_fraction)) {
    return spec.slow_s * 1000;
  }
  return Math.max(0, spec.base_ms + (r.float64() * 2 - 1) * spec.jitter_ms);
}

export class Handler {
  // counter: a DeliveryCounter, or null when the spec names no directory (scripts are then not counted).
  constructor(history, spec, counter, seed) {
    Object.assign(this, { history, spec, counter, seed, calls: 0 });
  }

  // Runs one call. signal: aborted when the library gives up on the call; timedOut() says whether that was its
  // per-job timeout (recorded) rather than a stop (not recorded).
  async handle(raw, call, signal, timedOut) {
    const n = ++this.calls;
    const p = decodePayload(raw);
    const echo = callValues(call);
    let step = {};
    if (p.script?.length && p.mid != null && this.counter) {
      const k = await this.counter.next(p.mid);
      step = p.script[k - 1] ?? {};
      echo.scripted = k;
    }
    this.history.record('invoke', 'deliver', { mid: p.mid, intact: p.intact, key: call.key, ...echo });
    const wait = typeof step.ms === 'number' ? step.ms : duration(this.spec, n, this.seed);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, wait);
      const onAbort = () => {
        clearTimeout(timer);
        if (timedOut()) this.history.record('fail', 'deliver', { mid: p.mid, error: 'timeout', ...echo });
        reject(signal.reason ?? new Error('call aborted'));
      };
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
    if (p.poison || step.fail === true) {
      const why = p.poison ? 'poison' : 'scripted';
      this.history.record('fail', 'deliver', { mid: p.mid, error: why, ...echo });
      throw new HandlerFailure(`harness handler failure: ${why} failure of ${p.mid}`);
    }
    this.history.record('ok', 'deliver', { mid: p.mid, ...echo });
  }
}
