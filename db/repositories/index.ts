export * from './artifacts.js';
export * from './base.js';
export * from './calibrations.js';
export * from './datasets.js';
export * from './evaluations.js';
export * from './models.js';
export * from './runs.js';
export * from './serving.js';
