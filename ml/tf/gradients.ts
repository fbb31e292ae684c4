import { register } from 'node:module';

/**
 * tfjs-core's Node bundle registers no gradients (the @tensorflow/tfjs umbrella package does that, and we
 * do not depend on it). The only copy of the gradient definitions is tfjs-core's ES-module build, whose
 * relative imports omit the `.js` extension that Node's ESM loader requires. A resolve hook scoped to
 * files inside tfjs-core/dist adds the extension; the gradients then register in tfjs's process-global
 * registry, shared with the Node bundle.
 */
const HOOK = `
export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (e) {
    const p = context.parentURL ?? '';
    if (p.includes('/@tensorflow/tfjs-core/dist/') && specifier.startsWith('.') && !specifier.endsWith('.js')) {
      return next(specifier + '.js', context);
    }
    throw e;
  }
}`;

let loading: Promise<void> | undefined;

export function registerAllGradients(): Promise<void> {
  loading ??= (async () => {
    register(`data:text/javascript,${encodeURIComponent(HOOK)}`, import.meta.url);
    await import('@tensorflow/tfjs-core/dist/register_all_gradients.js');
  })();
  return loading;
}
