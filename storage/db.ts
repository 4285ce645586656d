// The SQLite database: opened with WAL and foreign keys, migrated by PRAGMA user_version.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { UserError } from '../server/errors.js';
import { MIGRATIONS } from './migrations.js';

// Db is the handle every storage module receives.
export type Db = Database.Database;

// DB_FILE is the database's file name in the data directory.
export const DB_FILE = 'airlock.db';

// openDatabase opens (creating if needed) DATADIR/airlock.db and runs the migrations it has not run yet. A database it
// cannot use (not a database, unwritable, from a newer airlock) is a UserError naming the file.
export function openDatabase(dataDir: string): Db {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, DB_FILE);
  let db: Db | null = null;
  try {
    db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    migrate(db);
    return db;
  } catch (err) {
    db?.close();
    if (err instanceof Database.SqliteError || err instanceof UserError) throw new UserError(`database ${file}: ${err.message}`);
    throw err;
  }
}

// migrate applies every migration past the database's user_version, each in its own transaction.
export function migrate(db: Db): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new UserError(`schema version ${current} is newer than this airlock's (${MIGRATIONS.length}); upgrade airlock`);
  }
  for (let i = current; i < MIGRATIONS.length; i++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[i]);
      db.pragma(`user_version = ${i + 1}`);
    })();
  }
}

// dataVersion changes whenever another connection commits, so a server notices changes made by the CLI.
export function dataVersion(db: Db): number {
  return db.pragma('data_version', { simple: true }) as number;
}

// now is the timestamp format every table uses: RFC 3339 UTC with milliseconds. The string is made once per
// millisecond: a busy mirror stamps a dozen audit events within one, and toISOString takes 0.4 µs.
let lastMs = -1;
let lastIso = '';
export function now(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}
