#!/bin/sh
# verify-audit.sh EXPORT.jsonl MIRROR.pub — checks an airlock audit export with python3 and openssl only.
set -eu
export_file=$1 pub=$2 work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$export_file" "$work" <<'PY'
import hashlib, json, sys
path, work = sys.argv[1], sys.argv[2]
FIELDS = {'seq', 'time', 'actor', 'actorSerial', 'role', 'ip', 'action', 'repository', 'reference', 'digest',
          'decision', 'reason', 'status', 'bytes', 'prev', 'hash'}
def pairs(items):
    # A duplicate key would let a line hash one value and show another.
    keys = [k for k, _ in items]
    if len(keys) != len(set(keys)): raise ValueError('duplicate key')
    return dict(items)
def no_float(text): raise ValueError(f'{text} is not an integer')
def parse(line):
    v = json.loads(line, object_pairs_hook=pairs, parse_float=no_float, parse_constant=no_float)
    if not isinstance(v, dict): raise ValueError('not a JSON object')
    return v
prev, seq, n, cp = '0' * 64, None, 0, None
with open(path, 'rb') as f:
    for n, raw in enumerate(f, 1):
        try:
            line = raw.decode('utf-8').rstrip('\r\n')
        except UnicodeError as err:
            sys.exit(f'line {n}: not UTF-8 ({err})')
        if cp is not None:
            if line.strip(): sys.exit(f'line {n}: a line after the checkpoint')
            continue
        try:
            e = parse(line)
            if e.get('type') == 'checkpoint':
                cp = e
                continue
            if set(e) != FIELDS: raise ValueError('not the fields of an audit event')
            if type(e['seq']) is not int or not isinstance(e['prev'], str) or not isinstance(e['hash'], str):
                raise ValueError('seq, prev or hash of the wrong type')
            # RFC 8785 for these events (strings, integers, nulls): sorted keys, no spaces, UTF-8.
            body = {k: v for k, v in e.items() if k != 'hash'}
            canon = json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode('utf-8')
        except (ValueError, UnicodeError) as err:
            sys.exit(f'line {n}: not an audit event ({err})')
        if seq is None and e['seq'] == 1 and e['prev'] != prev: sys.exit('seq 1 must follow 64 zeros')
        if seq is not None and (e['seq'] != seq + 1 or e['prev'] != prev): sys.exit(f'line {n} seq {e["seq"]}: does not follow seq {seq}')
        if hashlib.sha256(e['prev'].encode() + canon).hexdigest() != e['hash']: sys.exit(f'line {n} seq {e["seq"]}: hash does not match')
        prev, seq = e['hash'], e['seq']
if seq is None: sys.exit('no events')
if cp is None or cp.get('seq') != seq or cp.get('hash') != prev: sys.exit('the last line is not a checkpoint over the last event')
open(f'{work}/msg', 'w').write(f'airlock-audit-checkpoint:v1:{cp["seq"]}:{cp["hash"]}')
open(f'{work}/sig.b64', 'w').write(str(cp.get('signature')))
print(f'chain intact: events up to seq {seq}')
PY
openssl base64 -d -A -in "$work/sig.b64" -out "$work/sig.der"
openssl dgst -sha256 -verify "$pub" -signature "$work/sig.der" "$work/msg"
