// Client certificates (SPEC §6): list, issue (PEM, or PKCS#12 for browsers) and revoke, effective at once.
import type { FastifyInstance } from 'fastify';
import { ApiError } from '../errors.js';
import { CaUnavailableError } from '../pki/authority.js';
import { normalizeSerial, type Role, toPkcs12 } from '../pki/ca.js';
import type { Services } from '../services.js';
import { actorOf, invalidField } from './common.js';
import { cert, CLIENT_NAME, errors, issuedCert, list, NOTE, obj, ROLE, SERIAL } from './schemas.js';

const TAGS = ['certs'];
const DEFAULT_DAYS = 365;

interface IssueBody {
  name: string;
  role: Role;
  days?: number;
  p12Password?: string;
}

// certRoutes registers /certs.
export async function certRoutes(app: FastifyInstance, s: Services): Promise<void> {
  app.get(
    '/certs',
    {
      config: { role: 'admin' },
      schema: { summary: 'List client certificates', description: 'Every certificate airlock issued, newest first, revoked ones included.', tags: TAGS, response: { 200: list('certs', cert), ...errors } },
    },
    async () => ({ certs: s.certs.list() }),
  );

  app.post<{ Body: IssueBody; Querystring: { format?: 'pem' | 'p12' } }>(
    '/certs',
    {
      config: { role: 'admin', action: 'admin.cert.issue' },
      schema: {
        summary: 'Issue a client certificate',
        description:
          'Answers the PEM certificate, private key and CA certificates (every tls.clientCa certificate, so that a client reaches the server across a CA renewal) as JSON, or with ?format=p12 a PKCS#12 file (application/x-pkcs12) protected by p12Password (empty by default). ' +
          'airlock keeps no copy of the private key. A server whose CA key is kept elsewhere (or is not its CA certificate\'s) answers 409.',
        tags: TAGS,
        querystring: { type: 'object', properties: { format: { type: 'string', enum: ['pem', 'p12'], default: 'pem' } }, additionalProperties: false },
        body: obj(
          {
            name: CLIENT_NAME,
            role: ROLE,
            days: { type: 'integer', minimum: 1, maximum: 3650, default: DEFAULT_DAYS },
            p12Password: { type: 'string', maxLength: 1024, description: 'password of the PKCS#12 file (format=p12 only; refused with 400 without it)' },
          },
          ['days', 'p12Password'],
        ),
        response: {
          201: {
            description: 'the new certificate (JSON), or with format=p12 the PKCS#12 file',
            content: { 'application/json': { schema: issuedCert }, 'application/x-pkcs12': { schema: { type: 'string', contentEncoding: 'binary' } } },
          },
          ...errors,
        },
      },
    },
    async (req, reply) => {
      const { name, role } = req.body;
      const days = req.body.days ?? DEFAULT_DAYS;
      req.airlock.reason = `${name} (${role}) for ${days} days`;
      // A password asks for the encrypted file: answered as PEM, the key would go out unencrypted against the caller's wish.
      if (req.body.p12Password !== undefined && req.query.format !== 'p12') throw invalidField('body', '/p12Password', 'is for format=p12 only; the PEM answer holds an unencrypted key');
      let issued;
      try {
        issued = s.authority.issue(name, role, days, actorOf(req));
      } catch (err) {
        throw new ApiError(err instanceof CaUnavailableError ? 'CONFLICT' : 'BAD_REQUEST', (err as Error).message);
      }
      req.airlock.reference = issued.serial;
      reply.code(201).header('cache-control', 'no-store').header('x-airlock-serial', issued.serial);
      if (req.query.format === 'p12') {
        const p12 = toPkcs12(issued, issued.caPem, req.body.p12Password ?? '');
        return reply.type('application/x-pkcs12').header('content-disposition', `attachment; filename="${name}.p12"`).send(p12);
      }
      return reply.type('application/json').send({
        serial: issued.serial,
        name: issued.name,
        role: issued.role,
        notAfter: issued.notAfter,
        certificate: issued.certPem,
        privateKey: issued.keyPem,
        ca: issued.caPem,
      });
    },
  );

  app.post<{ Params: { serial: string }; Body: { reason?: string } }>(
    '/certs/:serial/revoke',
    {
      config: { role: 'admin', action: 'admin.cert.revoke' },
      schema: {
        summary: 'Revoke a client certificate',
        description: 'The server refuses the certificate from the next request on, open connections included. An unknown serial answers 404, a revoked one 409.',
        tags: TAGS,
        params: obj({ serial: SERIAL }),
        body: obj({ reason: NOTE }, ['reason']),
        response: { 200: cert, ...errors },
      },
    },
    async (req) => {
      let serial: string;
      try {
        serial = normalizeSerial(req.params.serial);
      } catch (err) {
        throw invalidField('params', '/serial', (err as Error).message);
      }
      req.airlock.reference = serial;
      const record = s.certs.get(serial);
      if (!record) throw new ApiError('NOT_FOUND', `no certificate with serial ${serial} was issued by this airlock`);
      if (record.revokedAt) throw new ApiError('CONFLICT', `certificate ${serial} (${record.name}) was already revoked at ${record.revokedAt}`);
      const reason = req.body.reason ?? `revoked through the API by ${actorOf(req) ?? 'an admin'}`;
      req.airlock.reason = reason;
      s.authority.revoke(serial, reason);
      s.revoked.refresh();
      return s.certs.get(serial) ?? record;
    },
  );
}
