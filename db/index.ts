export * from './connection.js';
export * from './errors.js';
export * from './migrate.js';
export * from './notifications.js';
export * from './repositories/index.js';
export * from './retry.js';
export * from './schema/index.js';
