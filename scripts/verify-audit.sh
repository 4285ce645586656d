#!/bin/sh
# verify-audit.sh EXPORT.jsonl MIRROR.pub — checks an airlock audit export with python3 and openssl only.
set -eu
export_file=$1 pub=$2 work=$(mktemp -d)
python3 - "$export_file" "$work" <<'PY'
import hashlib, json, sys
path, work = sys.argv[1], sys.argv[2]
lines = [l for l in open(path, encoding='utf-8').read().split('\n') if l]
prev = None
for n, line in enumerate(lines[:-1], 1):
    e = json.loads(line)
    body = {k: v for k, v in e.items() if k != 'hash'}
    # RFC 8785 for these events (strings, integers, nulls): sorted keys, no spaces, UTF-8.
    canon = json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=False)
    if prev is not None and e['prev'] != prev: sys.exit(f'line {n} seq {e["seq"]}: prev does not link')
    if e['seq'] == 1 and e['prev'] != '0' * 64: sys.exit('seq 1 must follow 64 zeros')
    if hashlib.sha256((e['prev'] + canon).encode()).hexdigest() != e['hash']: sys.exit(f'line {n} seq {e["seq"]}: hash does not match')
    prev = e['hash']
cp = json.loads(lines[-1])
if cp.get('type') != 'checkpoint' or cp['hash'] != prev: sys.exit('the last line is not a checkpoint over the last event')
open(f'{work}/msg', 'w').write(f'airlock-audit-checkpoint:v1:{cp["seq"]}:{cp["hash"]}')
open(f'{work}/sig.b64', 'w').write(cp['signature'])
print(f'chain intact: {len(lines) - 1} events, last seq {cp["seq"]}')
PY
openssl base64 -d -A -in "$work/sig.b64" -out "$work/sig.der"
openssl dgst -sha256 -verify "$pub" -signature "$work/sig.der" "$work/msg"
rm -rf "$work"
