/**
 * An identifier taken from a request is untrusted: it goes into the audit log
 * bounded and printable (PostgreSQL refuses NUL in text, and a log must not
 * carry terminal control sequences).
 */
export function untrustedId(id: string): string {
  return id.slice(0, 64).replace(/[\u0000-\u001f\u007f-\u009f]/g, '\ufffd');
}
