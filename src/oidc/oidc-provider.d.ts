/**
 * The part of oidc-provider 9 that Guichet uses. The package ships no types;
 * these follow its documentation (docs/README.md of panva/node-oidc-provider)
 * and are kept to what src/oidc calls, so that a change there is a type error here.
 */
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  export type AdapterPayload = Record<string, unknown> & { grantId?: string; uid?: string; userCode?: string; consumed?: unknown };

  export interface Adapter {
    upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void>;
    find(id: string): Promise<AdapterPayload | undefined>;
    findByUid(uid: string): Promise<AdapterPayload | undefined>;
    findByUserCode(userCode: string): Promise<AdapterPayload | undefined>;
    consume(id: string): Promise<void>;
    destroy(id: string): Promise<void>;
    revokeByGrantId(grantId: string): Promise<void>;
  }

  export interface ClientLike {
    clientId: string;
    clientName?: string;
    sectorIdentifier?: string;
    redirectUris?: string[];
    [k: string]: unknown;
  }

  export interface OidcEntities {
    Client?: ClientLike;
    Account?: { accountId: string };
    AccessToken?: { jti: string; grantId?: string; accountId?: string; scope?: string };
    RefreshToken?: { jti: string; grantId?: string; accountId?: string; scope?: string };
    RotatedRefreshToken?: { jti: string };
    AuthorizationCode?: { jti: string; grantId?: string; accountId?: string; scope?: string };
    Grant?: { jti: string };
    Session?: { accountId?: string; jti: string };
    Interaction?: { uid: string };
    [k: string]: unknown;
  }

  export interface OidcCtx {
    route: string;
    client?: ClientLike;
    entities: OidcEntities;
    params?: Record<string, unknown>;
    session?: { accountId?: string; jti?: string };
    provider: Provider;
    [k: string]: unknown;
  }

  /** Koa's context as oidc-provider hands it to hooks and middleware. */
  export interface KoaContextWithOIDC {
    oidc: OidcCtx;
    req: IncomingMessage & Record<string, unknown>;
    res: ServerResponse;
    status: number;
    body: unknown;
    type: string;
    method: string;
    path: string;
    host: string;
    state: Record<string, unknown>;
    set(name: string, value: string): void;
  }

  export interface InteractionDetails {
    uid: string;
    prompt: { name: string; reasons: string[]; details: Record<string, unknown> };
    params: Record<string, unknown> & { client_id?: string; scope?: string; redirect_uri?: string };
    session?: { accountId: string; uid?: string; cookie?: string };
    grantId?: string;
    lastSubmission?: Record<string, unknown>;
    returnTo: string;
  }

  export class Grant {
    constructor(init: { accountId: string; clientId: string });
    jti: string;
    accountId: string;
    clientId: string;
    addOIDCScope(scope: string): void;
    rejectOIDCScope(scope: string): void;
    addOIDCClaims(claims: string[]): void;
    rejectOIDCClaims(claims: string[]): void;
    addResourceScope(indicator: string, scope: string): void;
    getOIDCScope(): string;
    save(): Promise<string>;
    static find(id: string): Promise<Grant | undefined>;
  }

  export interface ErrorOut {
    error: string;
    error_description?: string;
    [k: string]: unknown;
  }

  export class Provider {
    constructor(issuer: string, configuration: Record<string, unknown>);
    readonly issuer: string;
    proxy: boolean;
    Grant: typeof Grant;
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    use(mw: (ctx: KoaContextWithOIDC, next: () => Promise<void>) => Promise<void>): void;
    on(event: string, listener: (...args: never[]) => void): this;
    interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<InteractionDetails>;
    interactionResult(req: IncomingMessage, res: ServerResponse, result: Record<string, unknown>, opts?: { mergeWithLastSubmission?: boolean }): Promise<string>;
  }

  export class Check {
    constructor(reason: string, description: string, check: (ctx: KoaContextWithOIDC) => boolean | Promise<boolean>);
    static REQUEST_PROMPT: true;
    static NO_NEED_TO_PROMPT: false;
  }
  export interface Prompt {
    name: string;
    checks: Check[] & { add(check: Check, index?: number): void };
  }
  export const interactionPolicy: {
    base(): Prompt[] & { get(name: string): Prompt | undefined };
    Check: typeof Check;
  };

  export const errors: Record<string, new (...args: never[]) => Error & { error: string; error_description?: string; status: number }>;

  export default Provider;
}
