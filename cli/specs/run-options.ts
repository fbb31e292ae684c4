import type { OptionDefs } from '../args.js';

/** The options `up` and `retrain` share: what to train on, with which config and which LLM. */
export const RUN_OPTIONS = {
  'data-dir': {
    type: 'string',
    placeholder: 'DIR',
    description:
      'a MovieLens-1M, Amazon-Books or RecBole folder to train on; without it, CORELLA_DATA_DIR, then the ' +
      'cached or downloaded MovieLens-1M, then the synthetic dataset',
  },
  source: {
    type: 'string',
    placeholder: 'S',
    description: 'the format of --data-dir (movielens-1m, amazon-books, recbole, …)',
    defaultText: 'detected from the folder',
  },
  name: { type: 'string', placeholder: 'NAME', description: "the dataset's name in run ids and the UI" },
  config: {
    type: 'string',
    placeholder: 'NAME|FILE',
    description: 'the pipeline config: a name in config/ or a JSON file',
    default: 'default',
  },
  model: {
    type: 'string',
    placeholder: 'PATH|hf:URI',
    description: 'the GGUF LLM',
    defaultText: 'CORELLA_LLM_MODEL, else the cached model, else scripts/fetch-model',
  },
  // Skips downloading MovieLens-1M when no data dir is given (CORELLA_NO_DOWNLOAD=1 too); a cached copy is
  // still used.
  'no-download': {
    type: 'boolean',
    description: 'never download MovieLens-1M (a cached copy is still used; also CORELLA_NO_DOWNLOAD=1)',
  },
} as const satisfies OptionDefs;
