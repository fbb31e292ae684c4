export { auc, logLoss, accuracy, userAuc } from './classification.js';
export type { UserAuc } from './classification.js';
export { ctrMetrics, bucketMetrics, quantileEdges, bucketOf } from './report.js';
export type { CtrMetrics, BucketMetrics } from './report.js';
