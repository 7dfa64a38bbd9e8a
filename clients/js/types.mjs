// Writes types/roomcast.d.ts: tsc's declarations of src/roomcast.js without the members marked
// @internal (what the classes use among themselves). `node types.mjs --check` fails instead when
// the committed file differs from what the source gives.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const here = import.meta.dirname;
const out = mkdtempSync(join(tmpdir(), 'roomcast-types-'));
execFileSync(join(here, 'node_modules/.bin/tsc'), ['-p', join(here, 'tsconfig.json'), '--outDir', out], {
  stdio: 'inherit',
});
const kept = [];
let skipping = false;
let comment = [];
for (const line of readFileSync(join(out, 'roomcast.d.ts'), 'utf8').split('\n')) {
  const t = line.trim();
  if (skipping) {
    skipping = !t.endsWith(';') && !t.endsWith('}');
    continue;
  }
  if (comment.length || t.startsWith('/**')) {
    comment.push(line);
    if (!t.endsWith('*/')) continue;
    const block = comment;
    comment = [];
    if (block.some((l) => l.includes('@internal'))) skipping = true;
    else kept.push(...block);
    continue;
  }
  kept.push(line);
}
const text = kept.join('\n');
const target = join(here, 'types/roomcast.d.ts');
if (process.argv.includes('--check')) {
  if (readFileSync(target, 'utf8') !== text) {
    console.error('types/roomcast.d.ts is not what src/roomcast.js gives: run `npm run types`');
    process.exit(1);
  }
} else {
  writeFileSync(target, text);
}
