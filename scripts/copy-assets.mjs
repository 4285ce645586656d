// copy-assets copies what tsc does not emit next to the compiled server: the console's static files
// (dist/server/console) and the audit writer thread's plain JavaScript module (dist/storage/audit-writer.mjs).
import fs from 'node:fs';
import path from 'node:path';

const src = path.resolve('server/console');
const dest = path.resolve('dist/server/console');
if (fs.existsSync(src)) {
  fs.rmSync(dest, { recursive: true, force: true });
  fs.cpSync(src, dest, { recursive: true, filter: (f) => !f.endsWith('.ts') });
}

fs.mkdirSync(path.resolve('dist/storage'), { recursive: true });
fs.copyFileSync(path.resolve('storage/audit-writer.mjs'), path.resolve('dist/storage/audit-writer.mjs'));
