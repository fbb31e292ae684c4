// Its own module, free of dependencies, so `corella up` can split addresses without loading prom-client.

/** `host:port`, `:port` or `port` → its parts (host 127.0.0.1 when omitted: metrics are not public by default). */
export function parseAddress(
  spec: string,
  field = 'CORELLA_METRICS_ADDRESS',
): { host: string; port: number } {
  const m = /^(?:(.*):)?(\d+)$/.exec(spec.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port >= 0 && port < 65536)) {
    throw new Error(`${field} must be host:port, :port or port, got ${JSON.stringify(spec)}`);
  }
  return { host: m[1] && m[1] !== '' ? m[1].replace(/^\[|\]$/g, '') : '127.0.0.1', port };
}
