/**
 * A shard of a campaign: shard k of n (1 ≤ k ≤ n) owns the units i with i mod n = k - 1, where
 * a unit is one independently seeded piece of work (a uAPI fuzzing chunk, a byte-fuzzing
 * machine, a fail_nth sweep). Every unit derives its seed from the base seed and its index
 * alone, so shards 1..n together run exactly the units of the unsharded campaign.
 */
export interface Shard {
  readonly k: number;
  readonly n: number;
}

export const WHOLE: Shard = { k: 1, n: 1 };

/** `--shard k/n`. */
export function parseShard(text: string): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(text);
  const k = Number(m?.[1]);
  const n = Number(m?.[2]);
  if (!m || n < 1 || k < 1 || k > n)
    throw new Error(`--shard wants k/n with 1 <= k <= n, got ${text}`);
  return { k, n };
}

export function ownsUnit(shard: Shard, unit: number): boolean {
  return unit % shard.n === shard.k - 1;
}

/**
 * Part `w` of `parts` of a shard, itself a shard: the units of (k, n) dealt round-robin, so the
 * parts together own exactly the shard's units.
 */
export function subShard(shard: Shard, w: number, parts: number): Shard {
  return { k: shard.k + shard.n * w, n: shard.n * parts };
}

export function shardText(shard: Shard): string {
  return `${shard.k}/${shard.n}`;
}
