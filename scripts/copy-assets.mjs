// copy-assets copies the console's static files next to the compiled server (dist/server/console).
import fs from 'node:fs';
import path from 'node:path';

const src = path.resolve('server/console');
const dest = path.resolve('dist/server/console');
if (fs.existsSync(src)) {
  fs.rmSync(dest, { recursive: true, force: true });
  fs.cpSync(src, dest, { recursive: true, filter: (f) => !f.endsWith('.ts') });
}
