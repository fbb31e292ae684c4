import { issueLine, type ConfigIssue } from '../ml/config/issues.js';
import { CorellaError } from '../ml/errors.js';

/**
 * A pipeline config that does not validate: every issue with its field path, and the file when it came from
 * one. A BAD_CONFIG CorellaError, so the CLI exits 4 and an activity fails without retrying.
 */
export class ConfigError extends CorellaError {
  readonly file: string | undefined;
  readonly issues: ConfigIssue[];

  constructor(issues: ConfigIssue[], file?: string) {
    const where = file ? `${file}: ` : '';
    const lines = issues.map(issueLine);
    super(
      'BAD_CONFIG',
      lines.length === 1
        ? `${where}invalid config: ${lines[0]}`
        : `${where}invalid config (${lines.length} problems):\n  ${lines.join('\n  ')}`,
      { details: { file, field: issues[0]?.path, issues } },
    );
    this.name = 'ConfigError';
    this.file = file;
    this.issues = issues;
  }
}
