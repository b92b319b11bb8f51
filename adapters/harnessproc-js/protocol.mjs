// The one-shot subcommands and the publisher's line protocol of docs/adapters.md ("Process adapters"), as
// harnessproc/publish.go serves them.
import { createInterface } from 'node:readline';

// The three publish replies: done as asked; surely not committed; COMMIT sent, outcome unknown.
export const committed = () => ({ ok: true });
export const refused = (err) => ({ ok: false, definite: true, error: String(err?.message ?? err) });
export const unknown = (err) => ({ ok: false, definite: false, error: String(err?.message ?? err) });

function reply(obj) {
  return new Promise((resolve, reject) => process.stdout.write(JSON.stringify(obj) + '\n', (err) => (err ? reject(err) : resolve())));
}

// A one-shot subcommand (schema, state): one JSON request on stdin, one JSON reply on stdout; exit 1 with
// {"ok": false, "error"} when run throws.
export async function command(run) {
  let input = '';
  for await (const chunk of process.stdin) input += chunk;
  try {
    await reply(await run(JSON.parse(input)));
    return 0;
  } catch (err) {
    await reply({ ok: false, error: String(err?.stack ?? err) });
    return 1;
  }
}

// The `publish` entry point: open(request) from the first line gives {publish(request), close()}; then one reply
// per line until stdin closes. Requests are served one at a time, in order.
export async function servePublisher(open) {
  let publisher = null;
  try {
    for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
      let req;
      try {
        req = JSON.parse(line);
      } catch (err) {
        await reply(refused(`unreadable request: ${err.message}`));
        continue;
      }
      if (req.op === 'open' && publisher === null) {
        try {
          publisher = await open(req);
          await reply(committed());
        } catch (err) {
          await reply(refused(err));
        }
      } else if (req.op === 'publish' && publisher !== null) {
        await reply(await publisher.publish({ ...req, payloads: req.payloads.map((p) => Buffer.from(p, 'base64')) }));
      } else {
        await reply(refused(`unexpected op ${JSON.stringify(req.op)} (open first, once)`));
      }
    }
  } finally {
    await publisher?.close();
  }
}
