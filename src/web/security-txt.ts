/**
 * /.well-known/security.txt (RFC 9116): where to report a vulnerability in
 * this deployment, and the disclosure policy it points to. The contact, the
 * expiry, the policy and the encryption key come from the configuration
 * (GUICHET_SECURITY_*, README); the canonical address is the tenant's own.
 * Plain text, the same in both languages: the fields are machine-read, and
 * Preferred-Languages tells a reporter that French and English both work.
 */
import type { FastifyInstance } from 'fastify';
import type { Deps } from '../context.ts';

/** RFC 9116 §2.5.5: an Internet date-time (RFC 3339). */
function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function securityTxt(deps: Deps, baseUrl: string): string {
  const s = deps.config.securityTxt;
  const lines = [
    '# Guichet — signaler une vulnérabilité / reporting a vulnerability',
    ...s.contacts.map((c) => `Contact: ${c}`),
    `Expires: ${rfc3339(s.expires)}`,
    ...(s.encryption ? [`Encryption: ${s.encryption}`] : []),
    'Preferred-Languages: fr, en',
    `Canonical: ${baseUrl}/.well-known/security.txt`,
    `Policy: ${s.policy ?? `${baseUrl}/security-policy.txt`}`,
  ];
  return `${lines.join('\n')}\n`;
}

const POLICY = `Guichet — politique de divulgation / disclosure policy

[fr]
Vous avez trouvé une vulnérabilité dans Guichet ? Écrivez à l'adresse « Contact » de
/.well-known/security.txt, en français ou en anglais : ce que vous avez trouvé, comment
le reproduire, et ce que cela permet.
- N'accédez qu'à vos propres données ou à des comptes de test; ne lisez, ne modifiez
  et ne conservez aucune donnée d'une autre personne. Si vous en voyez, arrêtez-vous
  et dites-le-nous.
- Pas de déni de service, d'ingénierie sociale ni d'attaque physique.
- Laissez-nous 90 jours pour corriger avant de publier; nous accusons réception en
  5 jours ouvrables et vous tenons au courant.
- Une recherche menée de bonne foi selon ces règles ne fera l'objet d'aucune plainte
  de notre part.

[en]
Found a vulnerability in Guichet? Write to the "Contact" address of
/.well-known/security.txt, in French or English: what you found, how to reproduce it,
and what it allows.
- Access only your own data or test accounts; do not read, change or keep anyone
  else's data. If you come across some, stop and tell us.
- No denial of service, social engineering or physical attacks.
- Give us 90 days to fix before publishing; we acknowledge within 5 business days
  and keep you informed.
- Research done in good faith under these rules will not be met with a complaint
  from us.
`;

export function securityTxtRoutes(app: FastifyInstance, deps: Deps): void {
  app.get('/.well-known/security.txt', async (req, reply) => {
    return reply
      .type('text/plain; charset=utf-8')
      .header('cache-control', 'public, max-age=3600')
      .send(securityTxt(deps, req.ctx.baseUrl));
  });
  // RFC 9116 §3: the legacy location may redirect to the well-known one.
  app.get('/security.txt', async (_req, reply) => reply.redirect('/.well-known/security.txt', 301));
  app.get('/security-policy.txt', async (_req, reply) => reply.type('text/plain; charset=utf-8').header('cache-control', 'public, max-age=3600').send(POLICY));
}
