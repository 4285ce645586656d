// Range header parsing for blob requests (RFC 9110, one range only: a request for several is answered whole).

// ByteRange is an inclusive byte range within a blob.
export interface ByteRange {
  start: number;
  end: number;
}

// parseRange reads a Range header against a blob size: null for no (or an ignorable) header, 'invalid' for 416, else the range.
export function parseRange(header: string | undefined, size: number): ByteRange | null | 'invalid' {
  if (header === undefined) return null;
  const h = header.trim();
  if (!h.toLowerCase().startsWith('bytes=')) return null;
  const spec = h.slice(6).trim();
  // Several ranges would need a multipart answer; RFC 9110 lets a server ignore Range and send the whole blob instead,
  // where 416 would claim that none of them is satisfiable.
  if (spec.includes(',')) return null;
  const m = /^([0-9]{0,16})-([0-9]{0,16})$/.exec(spec);
  if (!m || (m[1] === '' && m[2] === '')) return 'invalid';
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'invalid';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  let end = m[2] === '' ? size - 1 : Number(m[2]);
  if (start >= size || end < start) return 'invalid';
  if (end >= size) end = size - 1;
  return { start, end };
}
