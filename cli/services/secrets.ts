/**
 * Passwords never reach a terminal or a log: URLs are printed with their password masked, and the full
 * database URL lives in a 0600 file in the home (paths.ts `writeDatabaseUrlFile`) for scripts that need it.
 */
const USERINFO_PASSWORD = /\b([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*:)([^\s@/]+)@/gi;

/** `postgres://postgres:s3cret@host:5432/db` → `postgres://postgres:***@host:5432/db`. */
export function maskUrl(url: string): string {
  return url.replace(USERINFO_PASSWORD, '$1***@');
}

/** Every URL-embedded password in a text (a log line, an error message, a JSON document) masked. */
export function redactSecrets(text: string): string {
  return text.replace(USERINFO_PASSWORD, '$1***@');
}
