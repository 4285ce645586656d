#!/bin/sh
# verify-audit.sh EXPORT.jsonl MIRROR.pub — checks an airlock audit export with python3 and openssl only.
set -eu
[ $# -eq 2 ] || { echo 'usage: sh scripts/verify-audit.sh EXPORT.jsonl MIRROR.pub' >&2; exit 2; }
export_file=$1 pub=$2 work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The checkpoint's keyId is sha256: and the hex SHA-256 of the key's SubjectPublicKeyInfo DER, as airlock names it.
openssl pkey -pubin -in "$pub" -outform DER -out "$work/pub.der" 2>/dev/null || { echo "$pub: not a public key" >&2; exit 1; }
python3 - "$export_file" "$work" <<'PY'
import hashlib, json, re, sys
path, work = sys.argv[1], sys.argv[2]
FIELDS = {'seq', 'time', 'actor', 'actorSerial', 'role', 'ip', 'action', 'repository', 'reference', 'digest',
          'decision', 'reason', 'status', 'bytes', 'prev', 'hash'}
CHECKPOINT_FIELDS = {'type', 'seq', 'hash', 'keyId', 'signature'}
BASE64 = re.compile(r'(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?')
key_id = 'sha256:' + hashlib.sha256(open(f'{work}/pub.der', 'rb').read()).hexdigest()
def pairs(items):
    # A duplicate key would let a line hash one value and show another.
    keys = [k for k, _ in items]
    if len(keys) != len(set(keys)): raise ValueError('duplicate key')
    return dict(items)
def no_float(text): raise ValueError(f'{text} is not an integer')
def plain_int(text):
    # No audit field is negative, and -0 would read (and hash) as 0: a minus sign is refused, as airlock refuses it.
    if text.startswith('-'): raise ValueError(f'{text} is written with a minus sign')
    v = int(text)
    if v > 2**53 - 1: raise ValueError(f'{text} is beyond 2^53-1')
    return v
def parse(line):
    v = json.loads(line, object_pairs_hook=pairs, parse_float=no_float, parse_int=plain_int, parse_constant=no_float)
    if not isinstance(v, dict): raise ValueError('not a JSON object')
    return v
prev, seq, n, cp, cp_line, last_line = '0' * 64, None, 0, None, 0, 0
try:
    f = open(path, 'rb')
except OSError as err:
    sys.exit(f'{path}: cannot read it ({err.strerror})')
with f:
    for n, raw in enumerate(f, 1):
        try:
            line = raw.decode('utf-8').rstrip('\r\n')
        except UnicodeError as err:
            sys.exit(f'line {n}: not UTF-8 ({err})')
        if cp is not None:
            # Only JSON whitespace is blank: str.strip() would also take \x1c or U+0085, which airlock refuses.
            if line.strip(' \t\r'): sys.exit(f'line {n}: a line after the checkpoint')
            continue
        try:
            e = parse(line)
        except (ValueError, UnicodeError, RecursionError) as err:
            sys.exit(f'line {n}: not an audit event ({err})')
        if 'type' in e:
            # The checkpoint exactly as airlock writes it: these five fields, a strict base64 signature.
            if e['type'] != 'checkpoint': sys.exit(f'line {n}: unknown line type')
            if set(e) != CHECKPOINT_FIELDS: sys.exit(f'line {n}: not the fields of a checkpoint')
            if type(e['seq']) is not int or e['seq'] < 1 or not all(isinstance(e[k], str) and e[k] for k in ('hash', 'keyId', 'signature')):
                sys.exit(f'line {n}: checkpoint seq, hash, keyId or signature of the wrong type')
            if not BASE64.fullmatch(e['signature']): sys.exit(f'line {n}: checkpoint signature is not base64')
            cp, cp_line = e, n
            continue
        try:
            if set(e) != FIELDS: raise ValueError('not the fields of an audit event')
            if type(e['seq']) is not int or not isinstance(e['prev'], str) or not isinstance(e['hash'], str):
                raise ValueError('seq, prev or hash of the wrong type')
            # RFC 8785 for these events (strings, integers, nulls): sorted keys, no spaces, UTF-8.
            body = {k: v for k, v in e.items() if k != 'hash'}
            canon = json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode('utf-8')
        except (ValueError, UnicodeError) as err:
            sys.exit(f'line {n}: not an audit event ({err})')
        if seq is None and e['seq'] == 1 and e['prev'] != prev: sys.exit(f'line {n} seq 1: prev is not 64 zeros (the first event ever follows none)')
        if seq is not None and (e['seq'] != seq + 1 or e['prev'] != prev): sys.exit(f'line {n} seq {e["seq"]}: does not follow seq {seq}')
        if hashlib.sha256(e['prev'].encode() + canon).hexdigest() != e['hash']: sys.exit(f'line {n} seq {e["seq"]}: hash does not match')
        prev, seq, last_line = e['hash'], e['seq'], n
if seq is None: sys.exit('no events')
if cp is None: sys.exit(f'line {last_line + 1}: the export ends at seq {seq} without a checkpoint (truncated)')
if cp['seq'] != seq: sys.exit(f'line {cp_line}: the checkpoint is for seq {cp["seq"]} but the last event is seq {seq} (truncated or forged)')
if cp['hash'] != prev: sys.exit(f'line {cp_line}: the checkpoint hash does not match the hash of seq {seq}')
if cp['keyId'] != key_id: sys.exit(f'line {cp_line}: checkpoint names key {cp["keyId"]}, but the verifying key is {key_id}')
open(f'{work}/msg', 'w').write(f'airlock-audit-checkpoint:v1:{cp["seq"]}:{cp["hash"]}')
open(f'{work}/sig.b64', 'w').write(cp['signature'])
open(f'{work}/line', 'w').write(str(cp_line))
print(f'chain intact: events up to seq {seq}')
PY
openssl base64 -d -A -in "$work/sig.b64" -out "$work/sig.der"
openssl dgst -sha256 -verify "$pub" -signature "$work/sig.der" "$work/msg" || { echo "line $(cat "$work/line"): checkpoint signature does not verify" >&2; exit 1; }
