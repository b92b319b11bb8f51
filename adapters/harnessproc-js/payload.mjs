// harness.payload.decode_script: {"body": "<json with mid, poison, pad, script?>", "crc": crc32(body)}.
import { crc32 } from 'node:zlib';

// Never throws: an unreadable payload has no mid and is not intact.
export function decodePayload(raw) {
  try {
    const outer = JSON.parse(raw.toString('utf8'));
    if (typeof outer?.body !== 'string' || outer.crc == null) return { mid: null, intact: false, poison: false, script: [] };
    const body = JSON.parse(outer.body);
    if (body?.mid == null) return { mid: null, intact: false, poison: false, script: [] };
    return { mid: String(body.mid), intact: crc32(Buffer.from(outer.body, 'utf8')) === outer.crc,
      poison: Boolean(body.poison), script: Array.isArray(body.script) ? body.script : [] };
  } catch {
    return { mid: null, intact: false, poison: false, script: [] };
  }
}
