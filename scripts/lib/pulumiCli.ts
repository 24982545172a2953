// Drives the real Pulumi CLI for the demo and the e2e suite: a local file
// backend, a passphrase secrets provider, and a working copy of a stack file.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";

export const REPO = path.resolve(__dirname, "..", "..");

/** What index.ts exports (`pulumi stack output --json`). */
export interface StackOutputs {
  version: string;
  previousVersion: string;
  backupUri: string;
  backupSha256: string;
  backupSize: number;
  healthStatus: string;
  versionProof: string;
  dataContinuity: string;
  keptData: { path: string; version: string; at: string };
  imageRef: string;
  previousImageRef: string;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

export class CliError extends Error {
  constructor(
    public readonly args: string[],
    public readonly result: CliResult,
  ) {
    super(`pulumi ${args.join(" ")} exited ${result.code}\n${tail(result.stdout + result.stderr, 60)}`);
  }
}

function tail(text: string, lines: number): string {
  return text.trim().split("\n").slice(-lines).join("\n");
}

/**
 * The environment every pulumi invocation of ours runs in: the pinned tools and
 * Node 24 first on PATH, the plugins scripts/tools.sh installed, and no plugin
 * downloads (same as scripts/tools-env.sh).
 */
export function toolsEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PATH: [path.join(REPO, ".tools", "bin"), path.join(REPO, "node_modules", ".bin"), process.env.PATH].join(path.delimiter),
    PULUMI_HOME: path.join(REPO, ".tools", "pulumi-home"),
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK: "true",
  };
}

/** The project's files a scratch copy links to; its stack file is a real copy. */
const PROJECT_FILES = ["Pulumi.yaml", "package.json", "tsconfig.json", "tsconfig.program.json", "index.ts", "components", "node_modules"];

export interface StackOptions {
  /** Where the file backend and a scratch copy of the project (with its own stack file) live. */
  workDir: string;
  stack: string;
  passphrase: string;
  /** Lines of output are passed here as they arrive (progress on long steps). */
  onOutput?: (line: string) => void;
  /**
   * A backend other than the file backend under workDir, e.g.
   * `s3://bucket?endpoint=http://127.0.0.1:9000&s3ForcePathStyle=true`: init() runs
   * `pulumi login <backendUrl>` first, and the login is kept in workDir/credentials
   * (PULUMI_CREDENTIALS_PATH), never in the shared PULUMI_HOME.
   */
  backendUrl?: string;
  /** Extra environment for every pulumi invocation (e.g. the state bucket's AWS_* credentials). */
  env?: Record<string, string>;
}

/**
 * One stack of this project on a local file backend. It runs in a scratch copy
 * of the project (links to the real program, a copy of the stack file), so the
 * committed stack files are never edited.
 */
export class PulumiStack {
  readonly configFile: string;
  readonly projectDir: string;
  private readonly env: NodeJS.ProcessEnv;

  constructor(private readonly opts: StackOptions) {
    mkdirSync(path.join(opts.workDir, "backend"), { recursive: true });
    this.projectDir = path.join(opts.workDir, "project");
    mkdirSync(this.projectDir, { recursive: true });
    for (const f of PROJECT_FILES) {
      const link = path.join(this.projectDir, f);
      if (!existsSync(link)) symlinkSync(path.join(REPO, f), link);
    }
    this.configFile = path.join(this.projectDir, `Pulumi.${opts.stack}.yaml`);
    this.env = {
      ...toolsEnv(),
      PULUMI_BACKEND_URL: `file://${path.join(opts.workDir, "backend")}`,
      PULUMI_CONFIG_PASSPHRASE: opts.passphrase,
      ...opts.env,
    };
    if (opts.backendUrl) {
      // The backend is the one `pulumi login` (login()) records, in this stack's own credentials dir.
      delete this.env.PULUMI_BACKEND_URL;
      this.env.PULUMI_CREDENTIALS_PATH = path.join(opts.workDir, "credentials");
    }
  }

  /** The environment this stack's pulumi runs with (for scripts that run pulumi themselves). */
  get environment(): NodeJS.ProcessEnv {
    return { ...this.env };
  }

  /** `pulumi login <backendUrl>` (a no-op for the default file backend, selected by PULUMI_BACKEND_URL). */
  async login(): Promise<CliResult | undefined> {
    if (!this.opts.backendUrl) return undefined;
    return this.run(["login", this.opts.backendUrl], { withStack: false });
  }

  /** Runs `pulumi <args>` in the project with this stack's config file. Rejects on a non-zero exit unless allowFailure. */
  run(args: string[], options: { stdin?: string; allowFailure?: boolean; withStack?: boolean } = {}): Promise<CliResult> {
    const full = [...args, "--non-interactive", "--cwd", this.projectDir];
    if (options.withStack !== false) full.push("--stack", this.opts.stack);
    const started = Date.now();
    return new Promise((resolve, reject) => {
      const child = spawn("pulumi", full, { env: this.env, stdio: ["pipe", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      const relay = (chunk: Buffer, sink: "out" | "err") => {
        const text = chunk.toString();
        if (sink === "out") stdout += text;
        else stderr += text;
        if (this.opts.onOutput) for (const line of text.split("\n")) if (line.trim()) this.opts.onOutput(line);
      };
      child.stdout.on("data", (c: Buffer) => relay(c, "out"));
      child.stderr.on("data", (c: Buffer) => relay(c, "err"));
      child.on("error", reject);
      child.on("close", (code) => {
        const result = { code: code ?? -1, stdout, stderr, ms: Date.now() - started };
        if (result.code !== 0 && !options.allowFailure) reject(new CliError(full, result));
        else resolve(result);
      });
      child.stdin.end(options.stdin ?? "");
    });
  }

  /** Writes the stack file and creates the stack on the file backend. */
  async init(configText: string): Promise<void> {
    writeFileSync(this.configFile, configText);
    await this.login();
    await this.run(["stack", "init", this.opts.stack, "--secrets-provider", "passphrase"], { withStack: false });
  }

  /** Sets a config value; secrets travel on stdin, never on the command line. */
  async set(key: string, value: string, options: { secret?: boolean; path?: boolean } = {}): Promise<void> {
    const args = ["config", "set", key];
    if (options.path) args.push("--path");
    if (options.secret) {
      await this.run([...args, "--secret"], { stdin: value });
    } else {
      await this.run([...args, value]);
    }
  }

  /** Edits `progressdb:version` in the stack file the way an operator would: one line. */
  setVersionLine(version: string): void {
    const text = readFileSync(this.configFile, "utf8");
    const next = text.replace(/^(\s*progressdb:version:\s*).*$/m, `$1"${version}"`);
    if (next === text && !text.includes(`"${version}"`)) throw new Error(`no progressdb:version line in ${this.configFile}`);
    writeFileSync(this.configFile, next);
  }

  up(extra: string[] = [], options: { allowFailure?: boolean } = {}): Promise<CliResult> {
    return this.run(["up", "--yes", "--skip-preview", ...extra], options);
  }

  preview(extra: string[] = [], options: { allowFailure?: boolean } = {}): Promise<CliResult> {
    return this.run(["preview", ...extra], options);
  }

  async outputs(): Promise<StackOutputs> {
    return JSON.parse((await this.run(["stack", "output", "--json"])).stdout) as StackOutputs;
  }

  async history(): Promise<Array<{ kind: string; result: string; version?: number; config?: Record<string, unknown>; resourceChanges?: Record<string, number> }>> {
    return JSON.parse((await this.run(["stack", "history", "--json", "--show-secrets=false"])).stdout);
  }

  /** Each update of `pulumi stack history`, oldest first: its result and the progressdb:version it ran with. */
  async updates(): Promise<Array<[result: string, version: string | undefined]>> {
    return (await this.history())
      .filter((h) => h.kind === "update")
      .reverse()
      .map((u) => [u.result, (u.config?.["progressdb:version"] as { value?: string } | undefined)?.value]);
  }

  async exportState(): Promise<string> {
    return (await this.run(["stack", "export"])).stdout;
  }
}
