/** The facility API's description (OpenAPI 3.1), served at /api/v1/openapi.json. */
const ageGroup = { type: 'string', enum: ['infant', 'toddler'], description: 'infant: 0–17 months at entry; toddler: 18 months–5 years' };
const error = {
  type: 'object',
  required: ['error', 'message'],
  properties: {
    error: { type: 'string', description: 'A stable code: badRequest, unauthorized, notFound, forbidden, closed, readOnly, tooLarge, unsupportedType, server' },
    message: { type: 'string', description: 'The same in words, in French (or English with ?lang=en)' },
    fields: { type: 'object', additionalProperties: { type: 'string' }, description: 'For badRequest: the field and what is wrong with it' },
  },
};
const places = {
  type: 'object',
  required: ['ageGroup', 'places', 'vacancies', 'pending', 'updatedAt'],
  properties: {
    ageGroup,
    places: { type: 'integer', minimum: 0, description: 'Places on the permit' },
    vacancies: { type: 'integer', minimum: 0, description: 'Open now and not yet offered (no eligible child for now)' },
    pending: { type: 'integer', minimum: 0, description: 'Offered, awaiting the parent’s answer' },
    updatedAt: { type: 'string', format: 'date-time' },
  },
};
const referral = {
  type: 'object',
  required: ['id', 'reference', 'ageGroup', 'status', 'offeredAt', 'deadline', 'answeredAt', 'startDate', 'protected', 'deleted', 'identity'],
  properties: {
    id: { type: 'string', format: 'uuid' },
    reference: { type: 'string', description: 'The child file’s pseudonymous reference' },
    ageGroup,
    status: { type: 'string', enum: ['pending', 'accepted', 'started', 'refused', 'expired', 'cancelled'] },
    offeredAt: { type: 'string', format: 'date-time' },
    deadline: { type: 'string', format: 'date-time' },
    answeredAt: { type: ['string', 'null'], format: 'date-time' },
    startDate: { type: ['string', 'null'], format: 'date' },
    protected: { type: 'boolean', description: 'A protected file: its identity stays null in the list, even accepted, and is read one offer at a time with a reason (POST …/identity)' },
    deleted: { type: 'boolean', description: 'The child file was deleted (by its family, or under the retention rules): identity null, the start of care can no longer be confirmed' },
    identity: {
      description: 'Only once the parent accepted the offer; null before, and null in the list for a protected file',
      oneOf: [
        { type: 'null' },
        {
          type: 'object',
          required: ['firstName', 'lastName', 'birthDate', 'email'],
          properties: {
            firstName: { type: 'string' },
            lastName: { type: 'string' },
            birthDate: { type: 'string', format: 'date' },
            parentFirstName: { type: ['string', 'null'] },
            parentLastName: { type: ['string', 'null'] },
            phone: { type: ['string', 'null'] },
            email: { type: 'string', format: 'email' },
          },
        },
      ],
    },
  },
};
const facilityId = { name: 'id', in: 'path', required: true, description: 'The facility the key opens', schema: { type: 'string', format: 'uuid' } };
const errors = {
  '401': { description: 'No key, or a key that is malformed, unknown or revoked', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
  '404': { description: 'Not this key’s facility, or no such facility (recorded as a denied attempt)', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
};

export const OPENAPI = {
  openapi: '3.1.0',
  info: {
    title: 'Guichet — facility API',
    version: '1.0.0',
    description:
      'For facility management software: read a facility’s places and vacancies, declare vacancies (Guichet refers the next children at once, as on the facility’s page) and read its referrals. One key opens one facility; the facility’s director creates it (shown once) and revokes it on the facility’s API keys page. Every call is decided and recorded in the audit log like the pages; the child’s identity appears only for accepted offers.',
  },
  servers: [{ url: '/api/v1' }],
  security: [{ facilityKey: [] }],
  components: {
    securitySchemes: { facilityKey: { type: 'http', scheme: 'bearer', description: 'Authorization: Bearer gfk_…' } },
    schemas: { Error: error, Places: places, Referral: referral },
  },
  paths: {
    '/facilities/{id}/places': {
      get: {
        operationId: 'readPlaces',
        summary: 'Places, vacancies and offers awaiting an answer, per age group',
        parameters: [facilityId],
        responses: { '200': { description: 'The places', content: { 'application/json': { schema: { type: 'object', required: ['places'], properties: { places: { type: 'array', items: { $ref: '#/components/schemas/Places' } } } } } } }, ...errors },
      },
    },
    '/facilities/{id}/vacancies': {
      post: {
        operationId: 'declareVacancies',
        summary: 'Set the vacancies open now (per age group); the next eligible children are referred at once',
        parameters: [facilityId],
        requestBody: {
          required: true,
          content: {
            'application/json': {
              schema: {
                type: 'object',
                additionalProperties: false,
                minProperties: 1,
                properties: { infant: { type: 'integer', minimum: 0, maximum: 1000 }, toddler: { type: 'integer', minimum: 0, maximum: 1000 } },
                description: 'Vacancies plus offers awaiting an answer may not exceed the places; a bad value for any group changes nothing',
              },
            },
          },
        },
        responses: {
          '200': { description: 'Declared and referred', content: { 'application/json': { schema: { type: 'object', required: ['offered', 'open', 'places'], properties: { offered: { type: 'integer' }, open: { type: 'integer' }, places: { type: 'array', items: { $ref: '#/components/schemas/Places' } } } } } } },
          '400': { description: 'A bad value: nothing changed', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
          ...errors,
        },
      },
    },
    '/facilities/{id}/referrals': {
      get: {
        operationId: 'readReferrals',
        summary: 'The facility’s offers, newest first (200 at most)',
        parameters: [facilityId],
        responses: { '200': { description: 'The referrals', content: { 'application/json': { schema: { type: 'object', required: ['referrals'], properties: { referrals: { type: 'array', items: { $ref: '#/components/schemas/Referral' } } } } } } }, ...errors },
      },
    },
    '/facilities/{id}/referrals/{offerId}/identity': {
      post: {
        operationId: 'readProtectedReferralIdentity',
        summary: 'The identity of a protected file’s accepted offer, with the reason it is needed: kept, reviewed by the security team, and raising an alert',
        parameters: [facilityId, { name: 'offerId', in: 'path', required: true, schema: { type: 'string', format: 'uuid' } }],
        requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', required: ['reason'], properties: { reason: { type: 'string', minLength: 1, maxLength: 500 } } } } } },
        responses: {
          '200': { description: 'The referral, its identity shown', content: { 'application/json': { schema: { type: 'object', required: ['referral'], properties: { referral: { $ref: '#/components/schemas/Referral' } } } } } },
          '400': { description: 'No reason: nothing read', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
          ...errors,
        },
      },
    },
  },
} as const;
