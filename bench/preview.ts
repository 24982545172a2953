// The reference for the preview goal: an empty TypeScript Pulumi program (the
// files `pulumi new typescript` writes, index.ts exporting nothing) in a temp
// dir, with this repository's node_modules, CLI and language host, on a stack
// of a file backend of its own.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { PulumiStack, REPO, toolsEnv } from "../scripts/lib/pulumiCli";
import { run } from "../tests/fixtures/net";

export interface EmptyProgram {
  dir: string;
  /** Runs `pulumi preview` once: its wall time in ms (throws on a failure). */
  preview(): Promise<number>;
  remove(): void;
}

export async function emptyProgram(): Promise<EmptyProgram> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "pdb-bench-empty-"));
  const project = path.join(dir, "project");
  mkdirSync(project);
  mkdirSync(path.join(dir, "backend"));
  writeFileSync(path.join(project, "Pulumi.yaml"), "name: empty\nruntime:\n  name: nodejs\n  options:\n    typescript: true\n");
  writeFileSync(path.join(project, "package.json"), JSON.stringify({ name: "empty", main: "index.ts", dependencies: { "@pulumi/pulumi": "*" } }, null, 2));
  writeFileSync(
    path.join(project, "tsconfig.json"),
    JSON.stringify({ compilerOptions: { strict: true, outDir: "bin", target: "es2020", module: "commonjs", moduleResolution: "node", sourceMap: true }, files: ["index.ts"] }, null, 2),
  );
  writeFileSync(path.join(project, "index.ts"), '// An empty Pulumi program.\nexport {};\n');
  symlinkSync(path.join(REPO, "node_modules"), path.join(project, "node_modules"));
  const env = { ...toolsEnv(), PULUMI_BACKEND_URL: `file://${path.join(dir, "backend")}`, PULUMI_CONFIG_PASSPHRASE: randomBytes(12).toString("hex") };
  const pulumi = async (args: string[]) => {
    const r = await run("pulumi", [...args, "--non-interactive", "--cwd", project], { env, timeoutMs: 300_000 });
    if (r.code !== 0) throw new Error(`pulumi ${args.join(" ")} (empty program) exited ${r.code}: ${r.stdout}${r.stderr}`);
    return r;
  };
  await pulumi(["stack", "init", "bench", "--secrets-provider", "passphrase"]);
  return {
    dir,
    async preview() {
      const t0 = performance.now();
      await pulumi(["preview", "--stack", "bench"]);
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
