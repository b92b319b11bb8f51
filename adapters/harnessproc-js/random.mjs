// Go's math/rand/v2 PCG (128-bit LCG, DXSM output) and Rand.Float64, so a Node adapter draws the same handler
// timings from (seed, call) as harnessproc does in Go.
const M64 = (1n << 64n) - 1n;
const M128 = (1n << 128n) - 1n;
const MUL = (2549297995355413924n << 64n) | 4865540595714422341n;
const INC = (6364136223846793005n << 64n) | 1442695040888963407n;
const CHEAP_MUL = 0xda942042e4dd58b5n;

export class PCG {
  constructor(seed1, seed2) {
    this.state = ((BigInt.asUintN(64, BigInt(seed1)) << 64n) | BigInt.asUintN(64, BigInt(seed2)));
  }

  uint64() {
    this.state = (this.state * MUL + INC) & M128;
    let hi = this.state >> 64n;
    const lo = this.state & M64;
    hi ^= hi >> 32n;
    hi = (hi * CHEAP_MUL) & M64;
    hi ^= hi >> 48n;
    return (hi * (lo | 1n)) & M64;
  }

  float64() {
    return Number(this.uint64() & ((1n << 53n) - 1n)) / 2 ** 53;
  }
}

export function randomSeed() {
  return BigInt(Math.floor(Math.random() * 2 ** 32)) << 32n | BigInt(Math.floor(Math.random() * 2 ** 32));
}
