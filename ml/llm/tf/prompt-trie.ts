/**
 * The prompts of a run as one prefix tree (a trie of their tokens), so their frozen pass is one batch.
 *
 * Prompts of a history block share their history token for token, and a causal model's output at a token
 * depends only on the tokens before it. So every distinct prefix needs computing once, and a token of the
 * tree sees exactly its ancestors: with the tree's nodes as the rows of one sequence, its own position as
 * RoPE position and an attention mask that opens only the ancestors, one pass over the tree gives every
 * prompt's per-token outputs, equal to running the prompts one by one. The row-wise parts of a block (norms,
 * projections, MLP) run on all nodes at once; attention runs per prompt, its new nodes against its whole
 * path (a dense mask over the tree would compute scores for every pair of nodes, most of them masked). The gain is the batch: a prompt
 * adds about 55 new tokens, too few rows for sgemm to run at speed (cpu GFLOP/s on 576 × 1536 products:
 * 55 at 36 rows, 114 at 68, 163 at 300), and each pass pays the tfjs per-op cost of 30 blocks once.
 */
export interface PromptTrie {
  /** Token of each node, nodes in insertion order (a parent always before its children). */
  tokens: number[];
  /** Position of each node in its prompts (its depth), the RoPE position. */
  positions: number[];
  /** Parent node of each node (−1 for a first token). */
  parents: Int32Array;
  /** Per prompt, the node of each of its positions. */
  paths: Int32Array[];
  /** Per prompt, the number of nodes before it was inserted: its own new nodes are numbered from there. */
  firstNew: number[];
}

export function buildPromptTrie(prompts: readonly (readonly number[])[]): PromptTrie {
  const tokens: number[] = [];
  const positions: number[] = [];
  const parents: number[] = [];
  // Children of each node by token, the root's under key −1.
  const children = new Map<number, Map<number, number>>();
  const firstNew: number[] = [];
  const paths = prompts.map((p) => {
    firstNew.push(tokens.length);
    const path = new Int32Array(p.length);
    let node = -1;
    for (let i = 0; i < p.length; i++) {
      let kids = children.get(node);
      if (!kids) children.set(node, (kids = new Map()));
      let next = kids.get(p[i]);
      if (next === undefined) {
        next = tokens.length;
        tokens.push(p[i]);
        positions.push(i);
        parents.push(node);
        kids.set(p[i], next);
      }
      path[i] = next;
      node = next;
    }
    return path;
  });
  return { tokens, positions, parents: Int32Array.from(parents), paths, firstNew };
}

/**
 * The nodes that prompt `i` adds to the trie: positions `from`..T−1 of its path, which are the contiguous
 * node indices `start`..start + T − from − 1 (a prompt's new nodes are created in order along its path, and
 * once one is new all later ones are). Undefined when the prompt adds none (a repeat, or a prefix of an
 * earlier prompt).
 */
export function trieSegment(trie: PromptTrie, i: number): { start: number; from: number } | undefined {
  const path = trie.paths[i];
  let from = 0;
  while (from < path.length && path[from] < trie.firstNew[i]) from++;
  return from === path.length ? undefined : { start: path[from], from };
}

/**
 * Cuts a run of prompts into consecutive groups of at most `maxNodes` trie nodes each (a prompt longer than
 * that is a group alone). A group also ends where a prompt shares less than a quarter of itself with the
 * previous one once the group is half full: that is where a history block starts, and a block split over
 * two groups pays its shared history twice.
 */
export function groupPrompts(prompts: readonly (readonly number[])[], maxNodes: number): number[][] {
  const groups: number[][] = [];
  let cur: number[] = [];
  let nodes = 0;
  for (let i = 0; i < prompts.length; i++) {
    const p = prompts[i];
    let common = 0;
    if (cur.length > 0) {
      // Shared with the group so far, approximated by the previous prompt (history blocks are chains).
      const prev = prompts[i - 1];
      while (common < prev.length && common < p.length && prev[common] === p[common]) common++;
    }
    const add = p.length - common;
    const blockStart = common < p.length / 4 && nodes >= maxNodes / 2;
    if (cur.length > 0 && (nodes + add > maxNodes || blockStart)) {
      groups.push(cur);
      cur = [];
      nodes = 0;
    }
    nodes += cur.length === 0 ? p.length : add;
    cur.push(i);
  }
  if (cur.length > 0) groups.push(cur);
  return groups;
}
