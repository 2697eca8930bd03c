// Build a JavaScript plugin into a Wasmgate component:
//   node sdk/js/build.mjs PLUGIN_DIR OUT.wasm
// PLUGIN_DIR has a package.json naming the plugin (`name`, `version`, `main`) and, under
// `wasmgate`, the JSON Schema of its config (`schema`) and the capabilities it imports
// (`capabilities`; `log` always). Name, version and schema are embedded in the component as
// its `wasmgate-manifest` custom section, which the gateway and `wasmgate plugin inspect` read.
//
// The component is built for a world of the capabilities the plugin names rather than the
// whole `wasmgate:plugin` world: componentize-js imports everything its world offers, and a
// plugin importing `http-outbound` is called asynchronously by the gateway, which costs more.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const [dir, out] = process.argv.slice(2);
if (!dir || !out) {
  console.error('usage: node sdk/js/build.mjs PLUGIN_DIR OUT.wasm');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const pkg = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8'));
const manifest = { name: pkg.name, version: pkg.version, language: 'javascript' };
if (pkg.wasmgate?.schema) {
  manifest.config_schema = JSON.parse(await readFile(join(dir, pkg.wasmgate.schema), 'utf8'));
}
const wit = await world(pkg.wasmgate?.capabilities ?? []);
const { component } = await componentize({
  sourcePath: resolve(dir, pkg.main ?? 'index.js'),
  witPath: wit,
  worldName: 'plugin',
  // No stdio: a plugin logs through wasmgate:plugin/log (the SDK routes uncaught errors
  // there). No fetch: outbound HTTP goes through wasmgate:plugin/http-outbound, granted
  // per binding.
  disableFeatures: ['stdio', 'http', 'fetch-event'],
});
await rm(wit, { recursive: true });
await mkdir(dirname(resolve(out)), { recursive: true });
await writeFile(out, Buffer.concat([component, customSection('wasmgate-manifest', JSON.stringify(manifest))]));
console.log(`${out}: ${pkg.name} ${pkg.version} (${(component.length / 1e6).toFixed(1)} MB)`);

// A WIT folder whose world imports `capabilities` and exports the policy.
async function world(capabilities) {
  const contract = await readFile(resolve(here, '../../wit/plugin.wit'), 'utf8');
  const version = contract.match(/^package wasmgate:plugin@([0-9.]+);/m)[1];
  const into = await mkdtemp(join(tmpdir(), 'wasmgate-wit-'));
  await mkdir(join(into, 'deps', 'plugin'), { recursive: true });
  await writeFile(join(into, 'deps', 'plugin', 'plugin.wit'), contract);
  const imports = ['log', ...capabilities.filter((c) => c !== 'log')]
    .map((c) => `    import wasmgate:plugin/${c}@${version};\n`)
    .join('');
  await writeFile(
    join(into, 'world.wit'),
    `package wasmgate:app;\n\nworld plugin {\n${imports}    export wasmgate:plugin/policy@${version};\n}\n`,
  );
  return into;
}

// A custom section (id 0): size, then the name and the payload.
function customSection(name, text) {
  const leb = (n) => {
    const bytes = [];
    do {
      let b = n & 0x7f;
      n >>>= 7;
      if (n) b |= 0x80;
      bytes.push(b);
    } while (n);
    return Buffer.from(bytes);
  };
  const nameBytes = Buffer.from(name);
  const body = Buffer.concat([leb(nameBytes.length), nameBytes, Buffer.from(text)]);
  return Buffer.concat([Buffer.from([0]), leb(body.length), body]);
}
