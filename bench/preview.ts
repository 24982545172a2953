// The references for the preview goal, each a TypeScript Pulumi program in a
// temp dir with this repository's node_modules, CLI and language host, on a
// stack of a file backend of its own:
// - empty: the files `pulumi new typescript` writes, index.ts exporting nothing;
// - one dynamic resource: one pulumi.dynamic.Resource with a trivial provider,
//   deployed once so that its preview is unchanged. It is the least a program
//   with a dynamic resource (the HealthCheck is one) can cost: to diff it, the
//   engine starts the dynamic provider's own Node process.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { PulumiStack, REPO, toolsEnv } from "../scripts/lib/pulumiCli";
import { run } from "../tests/fixtures/net";

export interface ReferenceProgram {
  /** Runs `pulumi preview` once: its wall time in ms (throws on a failure). */
  preview(): Promise<number>;
  remove(): void;
}

const PROGRAMS = {
  empty: "// An empty Pulumi program.\nexport {};\n",
  "one-dynamic-resource": `// One dynamic resource with a trivial provider, and nothing else.
import * as pulumi from "@pulumi/pulumi";

const provider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: Record<string, string>) {
    return { id: "one", outs: inputs };
  },
};

class One extends pulumi.dynamic.Resource {
  constructor(name: string) {
    super(provider, name, { value: "unchanged" }, {});
  }
}

new One("one");
`,
};

export type ReferenceKind = keyof typeof PROGRAMS;

export async function referenceProgram(kind: ReferenceKind): Promise<ReferenceProgram> {
  const dir = mkdtempSync(path.join(os.tmpdir(), `pdb-bench-${kind}-`));
  const project = path.join(dir, "project");
  mkdirSync(project);
  mkdirSync(path.join(dir, "backend"));
  writeFileSync(path.join(project, "Pulumi.yaml"), `name: ${kind}\nruntime:\n  name: nodejs\n  options:\n    typescript: true\n`);
  writeFileSync(path.join(project, "package.json"), JSON.stringify({ name: kind, main: "index.ts", dependencies: { "@pulumi/pulumi": "*" } }, null, 2));
  writeFileSync(
    path.join(project, "tsconfig.json"),
    JSON.stringify({ compilerOptions: { strict: true, outDir: "bin", target: "es2020", module: "commonjs", moduleResolution: "node", sourceMap: true }, files: ["index.ts"] }, null, 2),
  );
  writeFileSync(path.join(project, "index.ts"), PROGRAMS[kind]);
  symlinkSync(path.join(REPO, "node_modules"), path.join(project, "node_modules"));
  const env = { ...toolsEnv(), PULUMI_BACKEND_URL: `file://${path.join(dir, "backend")}`, PULUMI_CONFIG_PASSPHRASE: randomBytes(12).toString("hex") };
  const pulumi = async (args: string[]) => {
    const r = await run("pulumi", [...args, "--non-interactive", "--cwd", project], { env, timeoutMs: 300_000 });
    if (r.code !== 0) throw new Error(`pulumi ${args.join(" ")} (${kind} program) exited ${r.code}: ${r.stdout}${r.stderr}`);
    return r;
  };
  await pulumi(["stack", "init", "bench", "--secrets-provider", "passphrase"]);
  await pulumi(["up", "--yes", "--stack", "bench"]);
  return {
    async preview() {
      const t0 = performance.now();
      const r = await pulumi(["preview", "--stack", "bench"]);
      if (/\bto (create|update|replace|delete)\b/.test(r.stdout)) throw new Error(`the ${kind} program's preview is not unchanged:\n${r.stdout}`);
      return performance.now() - t0;
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** One `pulumi preview` of the stack: wall time, exit code and output. */
export async function timedPreview(stack: PulumiStack): Promise<{ ms: number; code: number; output: string }> {
  const t0 = performance.now();
  const r = await stack.preview([], { allowFailure: true });
  return { ms: performance.now() - t0, code: r.code, output: r.stdout + r.stderr };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
