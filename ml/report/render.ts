/**
 * Server-side rendering of Vega-Lite specs to SVG with the maintained `vega` and `vega-lite` packages: the
 * page carries finished SVG, so it opens without network or scripts.
 */
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { CorellaError } from '../errors.js';

export async function renderSvg(spec: TopLevelSpec, name = 'chart'): Promise<string> {
  let view: View | undefined;
  try {
    const compiled = compile(spec).spec;
    // renderer 'none': no canvas needed; toSVG() runs the headless SVG string renderer.
    view = new View(parse(compiled), { renderer: 'none' });
    return await view.toSVG();
  } catch (e) {
    throw new CorellaError('BAD_CONFIG', `report chart ${name}: ${(e as Error).message}`, {
      cause: e,
      details: { field: name },
    });
  } finally {
    view?.finalize();
  }
}
