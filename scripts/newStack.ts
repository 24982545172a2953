// npm run new-stack -- <name> [--secrets-provider <provider>] [--cwd <project dir>]
//
// Creates a stack of this project for one ProgressDB instance: asks for every key the program
// requires (with the defaults it would use), checks the answers with the program's own validator
// (components/config.ts) before anything is created, then `pulumi stack init` and the config:
// the plain keys with one `pulumi config set-all --path`, each secret read from a file and given
// to `pulumi config set --secret` on stdin (never on a command line, never printed).
//
// The stack is created on the backend pulumi is logged in to (or PULUMI_BACKEND_URL), with the
// passphrase provider (PULUMI_CONFIG_PASSPHRASE) unless --secrets-provider says otherwise (e.g.
// awskms://alias/progressdb-state?region=eu-west-1). Answers are read line by line from stdin, so
// `npm run new-stack -- prod < answers.txt` works as well as a terminal.
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import * as readline from "node:readline";
import { ConfigError, PROJECT, SECRET_KEYS, parseSettings, secretWellFormed, type SecretKey, type SecretState } from "../components/config";

const REPO = path.resolve(__dirname, "..");

interface Args {
  stack: string;
  secretsProvider?: string;
  cwd: string;
}

function parseArgs(argv: string[]): Args {
  const out: Partial<Args> = { cwd: REPO };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--secrets-provider") out.secretsProvider = argv[++i];
    else if (a === "--cwd") out.cwd = path.resolve(argv[++i] ?? "");
    else if (a === "-h" || a === "--help") {
      console.log("usage: npm run new-stack -- <name> [--secrets-provider <provider>] [--cwd <project dir>]");
      process.exit(0);
    } else if (a.startsWith("-")) fail(`unknown option ${a}`);
    else if (!out.stack) out.stack = a;
    else fail(`unexpected argument ${a}`);
  }
  if (!out.stack) fail("usage: npm run new-stack -- <name> [--secrets-provider <provider>] [--cwd <project dir>]");
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(out.stack)) fail(`not a stack name: '${out.stack}' (letters, digits, _ . -)`);
  if (!existsSync(path.join(out.cwd!, "Pulumi.yaml"))) fail(`no Pulumi.yaml in ${out.cwd}`);
  return out as Args;
}

function fail(message: string): never {
  console.error(`new-stack: ${message}`);
  process.exit(1);
}

/** Lines of stdin, one per question, whether it is a terminal or a pipe. */
class Answers {
  private readonly lines: string[] = [];
  private waiting?: (line: string | undefined) => void;
  private closed = false;
  private readonly rl = readline.createInterface({ input: process.stdin, terminal: false });

  constructor() {
    this.rl.on("line", (line) => {
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = undefined;
        w(line);
      } else this.lines.push(line);
    });
    this.rl.on("close", () => {
      this.closed = true;
      this.waiting?.(undefined);
    });
  }

  /** Prints the question (with its default) and returns the answer, the default when empty. */
  async ask(question: string, def = ""): Promise<string> {
    process.stdout.write(`${question}${def ? ` [${def}]` : ""}: `);
    const line = this.lines.length ? this.lines.shift() : this.closed ? undefined : await new Promise<string | undefined>((r) => (this.waiting = r));
    if (line === undefined) fail(`no answer for "${question}" (stdin ended)`);
    if (!process.stdin.isTTY) process.stdout.write("\n");
    return line.trim() === "" ? def : line.trim();
  }

  close(): void {
    this.rl.close();
  }
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** pulumi in the project, non-interactive; `stdin` is how secrets travel. */
function pulumi(cwd: string, args: string[], stdin = ""): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn("pulumi", [...args, "--non-interactive", "--cwd", cwd], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(stdin);
  });
}

async function must(cwd: string, what: string, args: string[], stdin?: string): Promise<Result> {
  const r = await pulumi(cwd, args, stdin);
  if (r.code !== 0) fail(`${what} failed (pulumi exited ${r.code}):\n${(r.stdout + r.stderr).trim()}`);
  return r;
}

/** A value at a config path, e.g. set(o, "deployment.host.port", 22). */
function setPath(obj: Record<string, unknown>, dotted: string, value: unknown): void {
  const parts = dotted.split(".");
  let cur = obj;
  for (const p of parts.slice(0, -1)) cur = (cur[p] ??= {}) as Record<string, unknown>;
  cur[parts.at(-1)!] = value;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const stackFile = path.join(args.cwd, `Pulumi.${args.stack}.yaml`);
  if (existsSync(stackFile)) fail(`${stackFile} already exists: edit it, or pick another name`);
  const a = new Answers();
  console.log(`New stack '${args.stack}' of ${PROJECT}: one ProgressDB instance. Empty answers take the [default].\n`);

  // [config path, value]: numbers and booleans as they will be typed in the stack file.
  const plain: Array<[string, string | number | boolean]> = [];
  const put = (key: string, value: string | number | boolean) => plain.push([key, value]);
  const version = await a.ask("ProgressDB version to run (progressdb:version)", "0.2.1");
  const mode = await a.ask("Deployment mode, binary or container (deployment.mode)", "binary");
  put("deployment.mode", mode);
  const address = await a.ask("SSH host address (deployment.host.address)");
  put("deployment.host.address", address);
  const port = Number(await a.ask("SSH port (deployment.host.port)", "22"));
  put("deployment.host.port", port);
  put("deployment.host.user", await a.ask("SSH user (deployment.host.user)", "root"));
  put("deployment.host.hostKey", await a.ask(`The host's SSH public key, as \`ssh-keyscan -p ${port} -t ed25519 ${address || "<address>"}\` prints it (deployment.host.hostKey)`));
  if (mode === "binary") {
    put("deployment.binary.serviceManager", await a.ask("Service manager: systemd, supervisor or process (deployment.binary.serviceManager)", "systemd"));
    put("deployment.binary.installDir", await a.ask("Install dir (deployment.binary.installDir)", "/opt/progressdb"));
  }
  put("storage.dbPath", await a.ask("Data dir on the host (storage.dbPath)", "/var/lib/progressdb/data"));
  const kmsMode = await a.ask("KMS mode: embedded or disabled (kms.mode)", "embedded");
  put("kms.mode", kmsMode);
  put("backup.bucket", await a.ask("S3 bucket for the pre-upgrade backups (backup.bucket)"));
  put("backup.region", await a.ask("Its region (backup.region)", "us-east-1"));
  const endpoint = await a.ask("S3 endpoint URL, empty for AWS (backup.endpoint)");
  if (endpoint) put("backup.endpoint", endpoint);
  put("health.url", await a.ask("Health-check base URL, https:// (health.url)"));

  console.log("\nSecrets are read from files (the file's content is the value); an empty answer leaves an optional one unset.");
  const secretFiles: Array<[SecretKey, string, boolean]> = [
    ["sshPrivateKey", "SSH private key file for the host (progressdb:sshPrivateKey)", true],
    ["kmsMasterKeyHex", "Embedded-KMS master key file, 64 hex characters (progressdb:kmsMasterKeyHex)", kmsMode === "embedded"],
    ["apiKey", "Backend API key file (progressdb:apiKey)", true],
    ["adminApiKey", "Admin API key file (progressdb:adminApiKey)", true],
    ["signingKey", "Signing key file, needed by 0.2.x (progressdb:signingKey)", !version.startsWith("0.1.")],
    ["frontendApiKey", "Frontend API key file, optional (progressdb:frontendApiKey)", false],
    ["s3AccessKeyId", "Backup S3 access key id file, optional: empty uses the host's own credentials (progressdb:s3AccessKeyId)", false],
    ["s3SecretAccessKey", "Backup S3 secret access key file (progressdb:s3SecretAccessKey)", false],
  ];
  const secrets = new Map<SecretKey, string>();
  for (const [key, question, required] of secretFiles) {
    if (key === "s3SecretAccessKey" && !secrets.has("s3AccessKeyId")) continue;
    if (key === "kmsMasterKeyHex" && kmsMode !== "embedded") continue;
    const file = await a.ask(question);
    if (!file) {
      if (required) fail(`progressdb:${key} is required: give the file that holds it`);
      continue;
    }
    const resolved = path.resolve(file.replace(/^~(?=\/)/, process.env.HOME ?? "~"));
    if (!existsSync(resolved)) fail(`progressdb:${key}: no such file ${resolved}`);
    secrets.set(key, readFileSync(resolved, "utf8"));
  }
  a.close();

  // The program's own validation, before anything is created.
  const values: Record<string, unknown> = { version };
  for (const [k, v] of plain) setPath(values, k, v);
  const states = Object.fromEntries(SECRET_KEYS.map((k) => [k, secrets.has(k) ? "secret" : "absent"])) as Record<SecretKey, SecretState>;
  const malformed = SECRET_KEYS.filter((k) => secrets.has(k) && !secretWellFormed(k, secrets.get(k)!));
  try {
    parseSettings({ values, secrets: states, malformed });
  } catch (e) {
    if (e instanceof ConfigError) fail(`nothing was created:\n${e.message}`);
    throw e;
  }

  const provider = args.secretsProvider ?? "passphrase";
  await must(args.cwd, "pulumi stack init", ["stack", "init", args.stack, "--secrets-provider", provider]);
  await must(args.cwd, "pulumi config set progressdb:version", ["config", "set", `${PROJECT}:version`, version, "--stack", args.stack]);
  await must(args.cwd, "pulumi config set-all", ["config", "set-all", "--path", "--stack", args.stack, ...plain.flatMap(([k, v]) => ["--plaintext", `${PROJECT}:${k}=${v}`])]);
  for (const [key, value] of secrets) {
    await must(args.cwd, `pulumi config set --secret progressdb:${key}`, ["config", "set", "--secret", `${PROJECT}:${key}`, "--stack", args.stack], value);
  }
  console.log(`\nCreated stack '${args.stack}' (${path.relative(process.cwd(), stackFile) || stackFile}), secrets encrypted by the ${provider.split(":")[0]} provider:`);
  for (const key of secrets.keys()) console.log(`  progressdb:${key}: [secret]`);
  console.log(`\nNext: review ${path.basename(stackFile)}, commit it, and \`pulumi preview --stack ${args.stack}\`.`);
}

main().catch((e: unknown) => fail(e instanceof Error ? e.message : String(e)));
