// The configuration contract (SPEC §2): complete validation with every bad field named by its path, secrets only
// through *Env variables, relative paths against the file's folder, a frozen result, and one-line errors.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfigFile, parseSize, validateConfig } from '../server/config.js';
import { UserError } from '../server/errors.js';
import { createCa, issueServerCert, issueServerCertWithValidity } from '../server/pki/ca.js';

const DIGEST = `sha256:${'a'.repeat(64)}`;

let tmp: string;
// pems are real TLS files and a publisher key: validation reads them (the mirror key is read only at start).
let pems: Record<string, string>;
const ACME_PUB = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();

// dataDir makes a folder holding the files a configuration must name.
function dataDir(name: string): string {
  const dir = path.join(tmp, name);
  for (const [f, content] of Object.entries(pems)) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), content);
  }
  return dir;
}

// problemsOf runs validateConfig and returns the UserError's message, failing when it does not throw one.
function problemsOf(doc: unknown, base: string, env: Record<string, string | undefined> = {}): string {
  try {
    validateConfig(doc, base, env);
  } catch (err) {
    assert.ok(err instanceof UserError, `expected a UserError, got ${String(err)}`);
    assert.ok(!err.message.includes('\n'), `the error is one line: ${err.message}`);
    return err.message;
  }
  assert.fail('validateConfig accepted an invalid configuration');
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-config-'));
  const ca = createCa('config test CA');
  const server = issueServerCert(ca, ['localhost']);
  pems = { 'pki/server.crt': server.certPem, 'pki/server.key': server.keyPem, 'pki/ca.crt': ca.certPem, 'keys/mirror.key': 'not read by validation\n', 'keys/acme.pub': ACME_PUB };
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('configuration validation', () => {
  test('a configuration with five mistakes reports all five by path in one error', () => {
    const base = dataDir('five');
    const msg = problemsOf(
      {
        colour: 'blue',
        upstreams: [
          { name: 'docker.io', url: 'https://registry-1.docker.example' },
          { name: 'plain.example', url: 'http://plain.example' },
        ],
        defaultUpstream: 'nowhere.example',
        policy: { pins: ['docker.io/library/alpine:3.20'] },
        cache: { maxBytes: 'lots' },
      },
      base,
    );
    assert.match(msg, /has 5 problems/);
    assert.match(msg, /colour: unknown key/);
    assert.match(msg, /upstreams\[1\]\.url: http:\/\/ is refused unless insecure: true/);
    assert.match(msg, /defaultUpstream: "nowhere\.example" is not the name of a configured upstream/);
    assert.match(msg, /policy\.pins\[0\]: .*digest/);
    assert.match(msg, /cache\.maxBytes: must be a size/);
  });

  test('an http:// upstream is accepted when it sets insecure: true', () => {
    const c = validateConfig({ upstreams: [{ name: 'plain.example', url: 'http://plain.example/', insecure: true }] }, dataDir('insecure'), {});
    assert.equal(c.upstreams[0].url, 'http://plain.example');
    assert.equal(c.upstreams[0].insecure, true);
    assert.equal(c.defaultUpstream, 'plain.example');
  });

  test('unknown keys are reported at every level by their full path', () => {
    const msg = problemsOf(
      {
        tls: { cert: 'pki/server.crt', certificate: 'x' },
        signing: { key: 'keys/mirror.key', password: 'hunter2' },
        upstreams: [{ name: 'ghcr.io', url: 'https://ghcr.example', token: 't' }],
        policy: { pins: [], publishers: [{ name: 'acme', key: 'keys/acme.pub', repositories: ['ghcr.io/acme/*'], trust: 'all' }], rules: [] },
        cache: { maxBytes: '1GiB', ttl: 5 },
        log: { level: 'info', format: 'json' },
      },
      dataDir('nested'),
    );
    for (const p of ['tls.certificate', 'signing.password', 'upstreams[0].token', 'policy.publishers[0].trust', 'policy.rules', 'cache.ttl', 'log.format']) {
      assert.ok(msg.includes(`${p}: unknown key`), `${p} is named in: ${msg}`);
    }
    assert.match(msg, /has 7 problems/);
    assert.ok(!msg.includes('hunter2'), 'a secret written into the file is not echoed');
  });

  test('an *Env field naming an unset variable is reported, and a set one supplies the secret', () => {
    const base = dataDir('env');
    const doc = {
      signing: { key: 'keys/mirror.key', passwordEnv: 'AIRLOCK_TEST_SIGNING_PASSWORD' },
      upstreams: [{ name: 'docker.io', url: 'https://registry.example', usernameEnv: 'AIRLOCK_TEST_USER', passwordEnv: 'AIRLOCK_TEST_TOKEN' }],
    };
    const msg = problemsOf(doc, base, { AIRLOCK_TEST_USER: 'robot' });
    assert.match(msg, /has 2 problems/);
    assert.match(msg, /signing\.passwordEnv: the environment variable it names is not set/);
    assert.match(msg, /upstreams\[0\]\.passwordEnv: the environment variable it names is not set/);
    assert.ok(!msg.includes('AIRLOCK_TEST_TOKEN'), 'the value of an *Env field is never printed');

    const c = validateConfig(doc, base, { AIRLOCK_TEST_USER: 'robot', AIRLOCK_TEST_TOKEN: 's3cret', AIRLOCK_TEST_SIGNING_PASSWORD: 'pw' });
    assert.equal(c.upstreams[0].username, 'robot');
    assert.equal(c.upstreams[0].password, 's3cret');
    assert.equal(c.signing.password, 'pw');
  });

  test('a username without a password, and an *Env that is not a variable name, are refused', () => {
    const msg = problemsOf({ upstreams: [{ name: 'docker.io', url: 'https://registry.example', usernameEnv: 'U' }], signing: { passwordEnv: 'not a name' } }, dataDir('pair'), {
      U: 'u',
    });
    assert.match(msg, /upstreams\[0\]: usernameEnv and passwordEnv go together/);
    assert.match(msg, /signing\.passwordEnv: must name an environment variable/);
  });

  test('files that do not exist are reported with their resolved paths', () => {
    const base = path.join(tmp, 'empty');
    fs.mkdirSync(base);
    const msg = problemsOf({}, base);
    for (const [field, file] of [
      ['tls.cert', 'pki/server.crt'],
      ['tls.key', 'pki/server.key'],
      ['tls.clientCa', 'pki/ca.crt'],
      ['signing.key', 'keys/mirror.key'],
    ]) {
      assert.ok(msg.includes(`${field}: file ${path.join(base, file)} does not exist`), `${field} in ${msg}`);
    }
  });

  test('TLS files, an upstream CA and a publisher key are read: junk, and a key of another certificate, are reported', () => {
    const base = dataDir('junk-files');
    fs.writeFileSync(path.join(base, 'junk.pem'), 'junk\n');
    const other = createCa('another CA');
    fs.writeFileSync(path.join(base, 'other.key'), other.keyPem);
    const msg = problemsOf(
      {
        tls: { key: 'other.key', clientCa: ['pki/ca.crt', 'junk.pem'] },
        upstreams: [{ name: 'docker.io', url: 'https://registry.example', ca: 'junk.pem' }],
        policy: { publishers: [{ name: 'acme', key: 'junk.pem', repositories: ['docker.io/acme/*'] }] },
      },
      base,
    );
    assert.match(msg, /has 4 problems/);
    assert.ok(msg.includes(`tls.key: ${path.join(base, 'other.key')} is not the key of the certificate in ${path.join(base, 'pki/server.crt')}`), msg);
    assert.ok(msg.includes(`tls.clientCa[1]: ${path.join(base, 'junk.pem')} is not a PEM CA certificate`), msg);
    assert.ok(msg.includes(`upstreams[0].ca: ${path.join(base, 'junk.pem')} is not a PEM CA certificate`), msg);
    assert.match(msg, /policy\.publishers\[0\]\.key: .*junk\.pem: publisher key: /);
  });

  test('a server certificate that has expired, or is not valid yet, is refused with its date', () => {
    const ca = createCa('dated CA');
    const day = 24 * 60 * 60 * 1000;
    const cases: [string, Date, Date, RegExp][] = [
      ['expired', new Date(Date.now() - 10 * day), new Date(Date.now() - day), /tls\.cert: .*server\.crt expired on [0-9-]+T[0-9:.]+Z; clients refuse it: renew it/],
      ['not-yet', new Date(Date.now() + day), new Date(Date.now() + 10 * day), /tls\.cert: .*server\.crt is not valid until [0-9-]+T[0-9:.]+Z; clients refuse it until then: check this machine's clock/],
    ];
    for (const [name, notBefore, notAfter, pattern] of cases) {
      const base = dataDir(`dated-${name}`);
      const server = issueServerCertWithValidity(ca, ['localhost'], notBefore, notAfter);
      fs.writeFileSync(path.join(base, 'pki', 'server.crt'), server.certPem);
      fs.writeFileSync(path.join(base, 'pki', 'server.key'), server.keyPem);
      const msg = problemsOf({ tls: { clientCa: 'pki/ca.crt' } }, base);
      assert.match(msg, /has 1 problem: /);
      assert.match(msg, pattern);
    }
  });

  test('a file in a folder this user may not enter is reported as unreadable, not as missing', (t) => {
    // A root-owned pki/ of mode 0700 as the service user sees it. The tests run as root, whom no mode shuts out, so the
    // stat fails as it does for that user.
    const base = dataDir('no-entry');
    const stat = fs.statSync;
    t.mock.method(fs, 'statSync', (p: fs.PathLike, ...rest: unknown[]) => {
      if (String(p).startsWith(path.join(base, 'pki'))) throw Object.assign(new Error(`EACCES: permission denied, stat '${String(p)}'`), { code: 'EACCES' });
      return (stat as (...a: unknown[]) => unknown)(p, ...rest);
    });
    const msg = problemsOf({ tls: { clientCa: 'pki/ca.crt' }, signing: { key: 'keys/missing.key' } }, base);
    for (const [field, f] of [['tls.cert', 'server.crt'], ['tls.key', 'server.key'], ['tls.clientCa', 'ca.crt']]) {
      assert.ok(msg.includes(`${field}: cannot read ${path.join(base, 'pki', f)}: permission denied (EACCES)`), `${field} in ${msg}`);
    }
    assert.ok(msg.includes(`signing.key: file ${path.join(base, 'keys', 'missing.key')} does not exist`), msg);
  });

  test('a TLS file that cannot be read is reported with the reason in words', () => {
    const base = dataDir('unreadable-files');
    fs.mkdirSync(path.join(base, 'a-dir.pem'));
    const msg = problemsOf({ tls: { clientCa: ['a-dir.pem'] } }, base);
    assert.ok(msg.includes(`tls.clientCa: cannot read ${path.join(base, 'a-dir.pem')}: a directory, not a file (EISDIR)`), msg);
  });

  test('a document that is not a mapping is reported as such, not with an empty path', () => {
    const msg = problemsOf(['listen', '127.0.0.1:5443'], dataDir('list'));
    assert.doesNotMatch(msg, /: : /);
    assert.match(msg, /must be a mapping/);
  });

  test('listen, publicUrl, log.level, timeouts and duplicate upstreams are checked', () => {
    const msg = problemsOf(
      {
        listen: 'localhost',
        publicUrl: 'http://mirror.example',
        log: { level: 'loud' },
        upstreams: [
          { name: 'docker.io', url: 'https://a.example', connectTimeoutMs: 5 },
          { name: 'docker.io', url: 'ftp://b.example' },
          { name: 'Bad Name', url: 'https://user:pw@c.example' },
          { name: 'quay.io', url: 'https://quay.io/v2/' },
          { name: 'ghcr.io', url: 'https://ghcr.io/?x=1' },
        ],
      },
      dataDir('misc'),
    );
    for (const p of [
      'listen: must be host:port',
      'publicUrl: must be an https:// URL',
      'log.level: must be one of',
      'upstreams[0].connectTimeoutMs: must be a whole number',
      'upstreams[1].name: duplicate upstream "docker.io"',
      'upstreams[1].url: must be an https:// URL',
      'upstreams[2].name: must be a registry host name',
      'upstreams[2].url: must not carry credentials',
      "upstreams[3].url: must not end in /v2: give the registry's root, airlock adds /v2/",
      'upstreams[4].url: must not carry a query or fragment',
    ]) {
      assert.ok(msg.includes(p), `"${p}" in ${msg}`);
    }
    assert.ok(!msg.includes('user:pw'), 'credentials in a URL are not echoed');
  });

  test('pins and publishers are checked against the configured upstreams', () => {
    const msg = problemsOf(
      {
        upstreams: [{ name: 'docker.io', url: 'https://registry.example' }],
        policy: {
          pins: [`quay.io/x/y@${DIGEST}`, 'not a reference'],
          publishers: [{ name: 'acme', key: 'keys/missing.pub', repositories: [] }],
        },
      },
      dataDir('policy'),
    );
    assert.match(msg, /policy\.pins\[0\]: "quay\.io" is not a configured upstream/);
    assert.match(msg, /policy\.pins\[1\]: /);
    assert.match(msg, /policy\.publishers\[0\]\.key: file .*keys\/missing\.pub does not exist/);
    assert.match(msg, /policy\.publishers\[0\]\.repositories: must be a non-empty list/);
  });

  test('sizes accept units and plain numbers and refuse anything else', () => {
    assert.equal(parseSize('50GiB'), 50 * 2 ** 30);
    assert.equal(parseSize('500MB'), 500e6);
    assert.equal(parseSize('1.5KiB'), 1536);
    assert.equal(parseSize(1048576), 1048576);
    for (const bad of ['lots', '', '0', '-5MB', '5 parsecs', 0, -1, 1.5, null, true, '100000000TiB']) assert.equal(parseSize(bad), null, String(bad));
  });

  test('hosts, upstream names, conflicting tag pins, duplicate publishers and a dataDir that is a file are refused', () => {
    const base = dataDir('names');
    fs.writeFileSync(path.join(base, 'acme.pub'), ACME_PUB);
    fs.mkdirSync(path.join(base, 'keydir'), { recursive: true });
    fs.writeFileSync(path.join(base, 'plain-file'), 'not a directory\n');
    const other = `sha256:${'b'.repeat(64)}`;
    const msg = problemsOf(
      {
        listen: '1.2.3.4.5:1',
        dataDir: 'plain-file',
        tls: { cert: 'pki/server.crt', key: 'pki/server.key', clientCa: 'pki/ca.crt' },
        signing: { key: 'keys/mirror.key' },
        upstreams: [
          { name: 'docker.io', url: 'https://a.example' },
          { name: 'index.docker.io', url: 'https://b.example' },
          { name: 'a..b', url: 'https://c.example' },
          { name: 'a.io:99999', url: 'https://d.example' },
          { name: '-', url: 'https://e.example' },
        ],
        policy: {
          pins: [`docker.io/library/alpine:3.20@${DIGEST}`, `docker.io/library/alpine:3.20@${other}`],
          publishers: [
            { name: 'acme', key: 'acme.pub', repositories: ['ghcr.io/acme/*'] },
            { name: 'acme', key: 'acme.pub', repositories: ['quay.io/acme/*'] },
            { name: 'dir', key: 'keydir', repositories: ['quay.io/dir/*'] },
            5,
          ],
        },
      },
      base,
    );
    for (const p of [
      'listen: "1.2.3.4.5" is not an IPv4 address or a host name',
      `dataDir: ${path.join(base, 'plain-file')} is not a directory`,
      'upstreams[1].name: "index.docker.io" is Docker Hub; name it docker.io',
      'upstreams[2].name: must be a registry host name',
      'upstreams[3].name: must be a registry host name',
      'upstreams[4].name: must be a registry host name',
      `policy.pins[1]: docker.io/library/alpine:3.20 is pinned to ${DIGEST} by an earlier pin`,
      'policy.publishers[1].name: duplicate publisher "acme"',
      `policy.publishers[2].key: cannot read ${path.join(base, 'keydir')}`,
    ]) {
      assert.ok(msg.includes(p), `"${p}" in ${msg}`);
    }
    assert.equal(msg.split('policy.publishers[3]: must be a mapping').length, 2, `reported once: ${msg}`);
    for (const listen of ['-foo:1', '[:::]:1', '[1.2.3.4]:1']) assert.match(problemsOf({ listen }, base), /listen: /, listen);
    assert.match(problemsOf({ listen: 5443 }, base), /listen: must be host:port, not a port alone: like 127\.0\.0\.1:5443 or \[::\]:5443(;|$)/);
    for (const listen of ['0.0.0.0:5443', '[::]:5443', 'mirror.internal:5443', 'localhost:0']) {
      assert.doesNotMatch(problemsOf({ listen, upstreams: 'x' }, base), /listen: /, listen);
    }
  });

  test('the value of an *Env field naming an unset variable is not repeated: it may be the secret itself', () => {
    for (const pasted of ['ghp_s3cretT0kenPastedHere', 'Q9SP4YLBSZ3YK1E0T2B53T1WFZ3A8D87B6HTZFKEDH7VN5Y2W9AQX9Z0SVGMC6PA']) {
      const msg = problemsOf({ upstreams: [{ name: 'ghcr.io', url: 'https://ghcr.io', usernameEnv: 'GHCR_USER', passwordEnv: pasted }] }, dataDir('pasted'), { GHCR_USER: 'robot' });
      assert.match(msg, /upstreams\[0\]\.passwordEnv: the environment variable it names is not set/);
      assert.ok(!msg.includes(pasted.slice(0, 10)), msg);
    }
  });
});

describe('a valid configuration file', () => {
  test('resolves relative paths against the file\'s folder and reads the publisher key', () => {
    const root = dataDir('resolve');
    const confDir = path.join(root, 'etc');
    fs.mkdirSync(confDir);
    fs.writeFileSync(path.join(confDir, 'upstream-ca.crt'), pems['pki/ca.crt']);
    fs.writeFileSync(path.join(confDir, 'acme.pub'), ACME_PUB);
    const file = path.join(confDir, 'airlock.yaml');
    fs.writeFileSync(
      file,
      [
        'listen: 0.0.0.0:8443',
        'dataDir: ..',
        'tls:',
        '  cert: ../pki/server.crt',
        '  key: ../pki/server.key',
        '  clientCa: [../pki/ca.crt]',
        'signing:',
        '  key: ../keys/mirror.key',
        'upstreams:',
        '  - name: ghcr.io',
        '    url: https://ghcr.example/',
        '    ca: upstream-ca.crt',
        'policy:',
        `  pins: ["ghcr.io/acme/app:1.0@${DIGEST}"]`,
        '  publishers:',
        '    - name: acme',
        '      key: acme.pub',
        '      repositories: ["ghcr.io/acme/*"]',
        'cache:',
        '  maxBytes: 2GiB',
        '',
      ].join('\n'),
    );
    const c = loadConfigFile(path.relative(process.cwd(), file), { AIRLOCK_KEY_PASSWORD: 'pw' });
    assert.equal(c.file, file);
    assert.deepEqual(c.listen, { host: '0.0.0.0', port: 8443 });
    assert.equal(c.dataDir, root);
    assert.equal(c.tls.cert, path.join(root, 'pki', 'server.crt'));
    assert.equal(c.tls.key, path.join(root, 'pki', 'server.key'));
    assert.deepEqual(c.tls.clientCa, [path.join(root, 'pki', 'ca.crt')]);
    assert.equal(c.signing.key, path.join(root, 'keys', 'mirror.key'));
    assert.equal(c.signing.password, 'pw');
    assert.equal(c.upstreams[0].ca, path.join(confDir, 'upstream-ca.crt'));
    assert.equal(c.upstreams[0].url, 'https://ghcr.example');
    assert.equal(c.defaultUpstream, 'ghcr.io');
    assert.deepEqual(c.policy.pins, [{ repository: 'ghcr.io/acme/app', tag: '1.0', digest: DIGEST }]);
    assert.deepEqual(c.policy.publishers, [{ name: 'acme', publicKey: ACME_PUB, repositories: ['ghcr.io/acme/*'] }]);
    assert.equal(c.cache.maxBytes, 2 * 2 ** 30);
  });

  test('puts the default tls and signing files under dataDir', () => {
    const root = dataDir('defaults');
    const confDir = path.join(tmp, 'defaults-conf');
    fs.mkdirSync(confDir);
    const file = path.join(confDir, 'airlock.yaml');
    fs.writeFileSync(file, `dataDir: ${root}\n`);
    const c = loadConfigFile(file, {});
    assert.equal(c.tls.cert, path.join(root, 'pki', 'server.crt'));
    assert.deepEqual(c.tls.clientCa, [path.join(root, 'pki', 'ca.crt')]);
    assert.equal(c.signing.key, path.join(root, 'keys', 'mirror.key'));
    assert.deepEqual(c.listen, { host: '127.0.0.1', port: 5443 });
    assert.equal(c.cache.maxBytes, 50 * 2 ** 30);
    assert.equal(c.defaultUpstream, null);
  });

  test('is accepted as JSON, since JSON is YAML', () => {
    const root = dataDir('json');
    const file = path.join(root, 'airlock.json');
    fs.writeFileSync(file, JSON.stringify({ listen: '[::1]:5443', upstreams: [{ name: 'docker.io', url: 'https://registry.example' }] }));
    const c = loadConfigFile(file, {});
    assert.deepEqual(c.listen, { host: '::1', port: 5443 });
    assert.equal(c.defaultUpstream, 'docker.io');
  });

  test('yields a deeply frozen configuration', () => {
    const c = validateConfig({ upstreams: [{ name: 'docker.io', url: 'https://registry.example' }], policy: { pins: [`docker.io/library/alpine@${DIGEST}`] } }, dataDir('frozen'), {});
    for (const o of [c, c.listen, c.tls, c.tls.clientCa, c.upstreams, c.upstreams[0], c.policy, c.policy.pins, c.policy.pins[0], c.cache]) assert.ok(Object.isFrozen(o));
    assert.throws(() => {
      (c.listen as { port: number }).port = 1;
    }, TypeError);
    assert.throws(() => {
      (c.upstreams as unknown as unknown[]).push({});
    }, TypeError);
  });
});

describe('a configuration file that cannot be used', () => {
  test('a YAML syntax error is one clear line naming the file', () => {
    const file = path.join(tmp, 'broken.yaml');
    fs.writeFileSync(file, 'listen: 127.0.0.1:5443\nupstreams:\n  - name: docker.io\n    url: [https://registry.example\n');
    assert.throws(
      () => loadConfigFile(file, {}),
      (err: Error) => err instanceof UserError && !err.message.includes('\n') && err.message.includes(file) && /not valid YAML/.test(err.message),
    );
  });

  test('a key given twice is refused', () => {
    const file = path.join(tmp, 'twice.yaml');
    fs.writeFileSync(file, 'listen: 127.0.0.1:5443\nlisten: 127.0.0.1:6443\n');
    assert.throws(() => loadConfigFile(file, {}), (err: Error) => err instanceof UserError && err.message === `config ${file} is not valid YAML: Map keys must be unique at line 2, column 1`);
  });

  test('a file that does not exist is one line naming it and the init that makes one', () => {
    const file = path.join(tmp, 'missing.yaml');
    assert.throws(
      () => loadConfigFile(file, {}),
      (err: Error) => err instanceof UserError && err.message === `cannot read config ${file}: no such file (ENOENT); airlock init --dir ${tmp} makes a data directory with an airlock.yaml`,
    );
    const data = path.join(tmp, 'data', 'airlock.yaml');
    assert.throws(
      () => loadConfigFile(data, {}),
      (err: Error) => err instanceof UserError && err.message === `cannot read config ${data}: no such file (ENOENT); airlock init --dir ${path.dirname(data)} makes it`,
    );
  });

  test('a directory given as the file is one line saying so', () => {
    assert.throws(() => loadConfigFile(tmp, {}), (err: Error) => err instanceof UserError && err.message === `cannot read config ${tmp}: a directory, not a file (EISDIR)`);
  });
});
