// The package as shipped: small enough (≤ 8 KB minified and gzipped, printed), its type
// declarations what the source gives, and its types checked by tsc.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { minify } from 'terser';

const root = join(import.meta.dirname, '..');

test('minified and gzipped, the library is at most 8 KB', async () => {
  const source = readFileSync(join(root, 'src/roomcast.js'), 'utf8');
  const { code } = await minify(source, { module: true, compress: true, mangle: true });
  const gzipped = gzipSync(code, { level: 9 }).length;
  console.log(`roomcast-client: ${source.length} bytes of source, ${code.length} minified, ${gzipped} minified and gzipped`);
  assert.ok(gzipped <= 8192, `${gzipped} bytes`);
  // The minified module still works: it exports the two classes.
  const mod = await import(`data:text/javascript;base64,${Buffer.from(code).toString('base64')}`);
  assert.equal(typeof mod.Roomcast, 'function');
  assert.equal(typeof mod.Subscription, 'function');
});

test('the types check, and types/roomcast.d.ts is what the source gives', () => {
  execFileSync(process.execPath, [join(root, 'types.mjs'), '--check'], { stdio: 'inherit' });
  const types = readFileSync(join(root, 'types/roomcast.d.ts'), 'utf8');
  for (const name of ['class Roomcast', 'class Subscription', 'publish(event: string', "'connecting' | 'connected' | 'disconnected' | 'closed'"]) {
    assert.ok(types.includes(name), name);
  }
  assert.ok(!/^\s+_\w+[(:<]/m.test(types), 'no internal member is declared');
});
