// pulumi.dynamic.Resource, with each provider's serialized code kept on disk
// between runs. The SDK serializes a dynamic provider by parsing every function
// it reaches (for the three providers here, ~0.4 s of CPU on every preview and
// up), and no dynamic resource is registered, so the engine cannot start the
// provider process, until that is done. The code only changes with the
// program's sources, so it is cached under their hash: what the SDK would
// produce, byte for byte, and a run on changed sources serializes afresh.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import * as pulumi from "@pulumi/pulumi";

const ROOT = path.dirname(__dirname);
/** PROGRESSDB_PROVIDER_CACHE_DIR moves it (the unit tests use their own). */
const CACHE_DIR = process.env.PROGRESSDB_PROVIDER_CACHE_DIR || path.join(ROOT, "node_modules", ".cache", "progressdb-upgrades", "dynamic-providers");

/** The hash of everything the serialized code depends on: the program's sources, its compiler settings and its locked dependencies. */
function sourceHash(): string {
  const h = createHash("sha256");
  const add = (file: string) => {
    h.update(`${path.relative(ROOT, file)}\0`);
    try {
      h.update(readFileSync(file));
    } catch {
      h.update("(absent)");
    }
    h.update("\0");
  };
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(ts|cjs|js|sh)$/.test(e.name)) add(p);
    }
  };
  for (const f of ["index.ts", "tsconfig.json", "tsconfig.program.json", "package-lock.json"]) add(path.join(ROOT, f));
  walk(path.join(ROOT, "components"));
  h.update(process.version);
  // The compiled form of this module's own code: the code a provider serializes to differs between
  // toolchains (ts-node under the engine, vite under vitest) as this does.
  h.update(sourceHash.toString());
  return h.digest("hex").slice(0, 32);
}

let hashOnce: string | undefined;
const serialized = new Map<string, pulumi.Input<string>>();

function readCache(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** Best effort: a read-only node_modules only means the next run serializes again. */
function writeCache(file: string, text: string): void {
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, text);
    renameSync(tmp, file);
  } catch {
    // not cached
  }
}

/** Where the code of the provider of resources of type `token` is cached for the program's current sources. */
export function providerCacheFile(token: string): string {
  hashOnce ??= sourceHash();
  return path.join(CACHE_DIR, `${hashOnce}-${token.replace(/[^A-Za-z0-9]+/g, "-")}.js`);
}

/** The provider's code as the SDK serializes it (`pulumi.runtime.serializeFunction(() => provider)`). */
function providerCode(provider: pulumi.dynamic.ResourceProvider, token: string): pulumi.Input<string> {
  const known = serialized.get(token);
  if (known !== undefined) return known;
  const file = providerCacheFile(token);
  const cached = readCache(file);
  const code: pulumi.Input<string> =
    cached ??
    pulumi.output(
      pulumi.runtime.serializeFunction(() => provider, { allowSecrets: true }).then((sf) => {
        // A provider that captured a secret is kept as one, and never written to disk.
        if (sf.containsSecrets) return pulumi.secret(sf.text);
        writeCache(file, sf.text);
        return sf.text;
      }),
    );
  serialized.set(token, code);
  return code;
}

/**
 * A resource of type `pulumi-nodejs:dynamic/<module>:<type>` served by `provider`: the wire format of
 * pulumi.dynamic.Resource (its `__provider` input is the provider's code), with the code cached.
 */
export abstract class DynamicResource extends pulumi.CustomResource {
  constructor(provider: pulumi.dynamic.ResourceProvider, name: string, props: pulumi.Inputs, opts: pulumi.CustomResourceOptions | undefined, module: string, type: string) {
    if (props.__provider !== undefined) throw new Error("A dynamic resource must not define the __provider key");
    const token = `pulumi-nodejs:dynamic/${module}:${type}`;
    super(token, name, { ...props, __provider: providerCode(provider, token) }, opts);
  }
}
