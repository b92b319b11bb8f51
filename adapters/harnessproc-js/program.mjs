// A process adapter's entry point: dispatches `schema`, `state`, `publish` and `consume SPEC` to the library's own
// calls and exits with the subcommand's code (libraries may leave timers behind once it is done).
import { consume as runConsumer } from './consume.mjs';
import { command, servePublisher } from './protocol.mjs';

// impl: {createSchema(request), readState(request), openPublisher(openRequest), consume(spec, handler, history)}.
export async function runProgram(name, impl, argv = process.argv.slice(2)) {
  const [sub, ...args] = argv;
  let code = 2;
  if (sub === 'schema') code = await command(impl.createSchema);
  else if (sub === 'state') code = await command(impl.readState);
  else if (sub === 'publish') code = (await servePublisher(impl.openPublisher), 0);
  else if (sub === 'consume' && args.length === 1) code = await runConsumer(args[0], impl.consume);
  else process.stderr.write(`usage: ${name} schema|state|publish|consume SPEC\n`);
  process.exit(code);
}
