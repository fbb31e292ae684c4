export { retrainWorkflow, progressQuery } from './retrain.js';
export { recalibrateWorkflow } from './recalibrate.js';
