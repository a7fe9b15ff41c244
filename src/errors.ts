import type { FieldErrorKey } from './web/i18n/index.ts';

export type ErrorKind =
  | 'notFound'
  | 'forbidden'
  | 'signInRequired'
  | 'emailNotVerified'
  | 'badRequest'
  | 'csrf'
  | 'tooLarge'
  | 'unsupportedType'
  | 'tooMany'
  /** A newly granted role during its cooling-off period (src/access/decide.ts). */
  | 'coolingOff'
  /** The tenant's lockdown closes personal data (level 3) or the whole service (level 4). */
  | 'closed'
  /** The tenant's lockdown makes staff read-only (level 2). */
  | 'readOnly'
  /** The tenant's lockdown level 4: the maintenance page. */
  | 'maintenance'
  /** A protected file opens only with a stated reason. */
  | 'reasonRequired';

const STATUS: Record<ErrorKind, number> = {
  notFound: 404,
  forbidden: 403,
  signInRequired: 401,
  emailNotVerified: 403,
  badRequest: 400,
  csrf: 403,
  tooLarge: 413,
  unsupportedType: 415,
  tooMany: 429,
  coolingOff: 403,
  closed: 503,
  readOnly: 403,
  maintenance: 503,
  reasonRequired: 403,
};

/**
 * An error whose message a person may read. Carries a stable kind, translated
 * at the edge; anything else that escapes is a 500 with a generic message.
 */
export class AppError extends Error {
  readonly status: number;
  constructor(readonly kind: ErrorKind) {
    super(kind);
    this.status = STATUS[kind];
  }
}

/** Bad input on a form or API body: per-field message keys; nothing was changed. */
export class ValidationError extends AppError {
  constructor(readonly fields: Record<string, FieldErrorKey>) {
    super('badRequest');
  }
}
