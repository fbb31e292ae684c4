export { retrainWorkflow, progressQuery } from './retrain.js';
export { recalibrateWorkflow } from './recalibrate.js';
export { scoreWorkflow, scoreProgressQuery } from './score.js';
