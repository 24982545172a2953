/**
 * One run of the real engine against the local stack: sshd, MinIO and a
 * release mirror on 127.0.0.1 (the stand-in's releases, or the real archives
 * in PDB_RELEASES_DIR / ../shared/progressdb-releases), a working copy of
 * Pulumi.local.yaml moved onto them, its secrets set, and helpers to look at
 * the host the stack deploys to. Everything started here is stopped by stop().
 */
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, lstatSync, readlinkSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PulumiStack, REPO } from "../../scripts/lib/pulumiCli";
import { writeLocalStack } from "../../scripts/lib/localStack";
import { startMinio, type MinioHandle } from "../fixtures/minio";
import { freePort } from "../fixtures/net";
import { startReleaseMirror, type BuildSpec, type ReleaseMirror } from "../fixtures/releases";
import { startSshd, type SshdHandle } from "../fixtures/sshd";
import { ApiTarget, dialectOf } from "../fixtures/progressdbApi";

export const PULUMI = path.join(REPO, ".tools", "bin", "pulumi");

export interface EngineWorld {
  sshd: SshdHandle;
  minio: MinioHandle;
  mirror: ReleaseMirror;
  stack: PulumiStack;
  root: string;
  /** The "host": install dir and data dir the stack deploys to. */
  installDir: string;
  dbPath: string;
  url: string;
  secrets: { kmsMasterKeyHex: string; apiKey: string; adminApiKey: string; signingKey: string; passphrase: string };
  /** Everything the CLI printed. */
  log: string[];
  api(version: string): ApiTarget;
  pid(): string;
  backupObjects(): Promise<string[]>;
  /** Every secret value this run set: none may show up outside the 0600 config files. */
  secretValues(): string[];
  stop(): Promise<void>;
}

/** What a `stackFile` hook may use: the servers of this run, and where the "host" lives. */
export interface StackFileContext {
  sshd: SshdHandle;
  minio: MinioHandle;
  mirror: ReleaseMirror;
  root: string;
  servicePort: number;
  url: string;
}

export async function startEngineWorld(opts: {
  versions?: BuildSpec[];
  fromDir?: string;
  stackName?: string;
  /** Where the stack's state and the "host" live; a temp dir by default (removed by stop()). */
  root?: string;
  /** Each line the CLI prints, as it prints it. */
  onOutput?: (line: string) => void;
  /**
   * Rewrites the stack file before `pulumi stack init` (another mode, fault proxies in front of
   * sshd or S3, smaller limits). Gets the local stack moved onto this run's servers; its result is
   * the stack file. The secrets are set after it, so they survive.
   */
  stackFile?: (text: string, ctx: StackFileContext) => string | Promise<string>;
  /**
   * Another backend than the file backend under root (e.g. an S3 state bucket on this run's
   * MinIO): called once MinIO is up, before `pulumi login` and `pulumi stack init`.
   */
  backend?: (minio: MinioHandle) => Promise<{ url: string; env?: Record<string, string> }>;
}): Promise<EngineWorld> {
  if (!existsSync(PULUMI)) throw new Error(`${PULUMI} is missing: run scripts/setup.sh (npm test does) to build the toolchain`);
  const [mirror, sshd, minio] = await Promise.all([
    startReleaseMirror(opts.fromDir ? { fromDir: opts.fromDir } : { versions: opts.versions }),
    startSshd(),
    startMinio(),
  ]);
  const root = opts.root ?? mkdtempSync(path.join(os.tmpdir(), "pdb-e2e-"));
  // The "host" lives under it, and the service runs as its own user, who must be able to enter it.
  chmodSync(root, 0o755);
  const servicePort = await freePort();
  const secrets = {
    kmsMasterKeyHex: randomBytes(32).toString("hex"),
    apiKey: `sk_${randomBytes(12).toString("hex")}`,
    adminApiKey: `ak_${randomBytes(12).toString("hex")}`,
    signingKey: `sg_${randomBytes(12).toString("hex")}`,
    passphrase: randomBytes(12).toString("hex"),
  };
  const log: string[] = [];
  const stackName = opts.stackName ?? "e2e";
  const backend = opts.backend ? await opts.backend(minio) : undefined;
  const stack = new PulumiStack({ workDir: path.join(root, "pulumi"), stack: stackName, passphrase: secrets.passphrase, backendUrl: backend?.url, env: backend?.env, onOutput: (l) => {
    log.push(l);
    opts.onOutput?.(l);
  } });
  const file = path.join(root, `Pulumi.${stackName}.yaml`);
  writeLocalStack(file, {
    sshPort: sshd.port,
    sshHostKey: sshd.hostPublicKey,
    mirrorBaseUrl: mirror.baseUrl,
    s3Endpoint: minio.endpoint,
    bucket: minio.bucket,
    servicePort,
    root: path.join(root, "host"),
  });
  const url = `http://127.0.0.1:${servicePort}`;
  const local = readFileSync(file, "utf8");
  await stack.init(opts.stackFile ? await opts.stackFile(local, { sshd, minio, mirror, root, servicePort, url }) : local);
  await stack.set("progressdb:sshPrivateKey", sshd.privateKey, { secret: true });
  await stack.set("progressdb:s3AccessKeyId", minio.accessKeyId, { secret: true });
  await stack.set("progressdb:s3SecretAccessKey", minio.secretAccessKey, { secret: true });
  for (const k of ["kmsMasterKeyHex", "apiKey", "adminApiKey", "signingKey"] as const) await stack.set(`progressdb:${k}`, secrets[k], { secret: true });
  const installDir = path.join(root, "host", "opt");
  return {
    sshd,
    minio,
    mirror,
    stack,
    root,
    installDir,
    dbPath: path.join(root, "host", "data"),
    url,
    secrets,
    log,
    api: (version) => ({ url, dialect: dialectOf(version), backendKey: secrets.apiKey }),
    pid: () => readFileSync(path.join(installDir, "run", "progressdb.pid"), "utf8").trim(),
    async backupObjects() {
      const r = await minio.aws(["s3api", "list-objects-v2", "--bucket", minio.bucket, "--query", "Contents[].Key", "--output", "json"]);
      return (JSON.parse(r.stdout || "null") as string[] | null) ?? [];
    },
    secretValues: () => [secrets.kmsMasterKeyHex, secrets.apiKey, secrets.adminApiKey, secrets.signingKey, minio.secretAccessKey, sshd.privateKey.split("\n")[1]],
    async stop() {
      stopServiceUnder(root);
      await Promise.all([mirror.stop(), sshd.stop(), minio.stop()].map((p) => p.catch(() => undefined)));
      if (!opts.root) rmSync(root, { recursive: true, force: true });
    },
  };
}

/** SIGKILLs every process whose executable lives under `root` (the service the stack started, detached by design). */
export function stopServiceUnder(root: string): void {
  for (const p of readdirSync("/proc").filter((x) => /^\d+$/.test(x))) {
    try {
      if (readlinkSync(`/proc/${p}/exe`).startsWith(`${root}/`)) process.kill(Number(p), "SIGKILL");
    } catch {
      /* gone, or not ours to read */
    }
  }
}

/**
 * Where this run's secrets leaked: the state export, the CLI's output, and host
 * files other than the 0600 config files next to each release (which must hold
 * them). Each list is empty when nothing leaked.
 */
export async function secretLeaks(w: EngineWorld): Promise<{ inState: string[]; inOutput: string[]; inFiles: string[]; configModes: number[] }> {
  const secrets = w.secretValues();
  // The state as stored: a secret anywhere but inside a secret value is in plaintext here.
  const state = await w.stack.exportState();
  // And every command's stdout and stderr decrypted: what a host script prints must never hold a
  // secret, even if some provider marked the stream secret (which would hide it from the export).
  // (Into a 0600 file, not stdout: the CLI's output is w.log, which is itself scanned.)
  const revealed = path.join(mkdtempSync(path.join(os.tmpdir(), "pdb-export-")), "state.json");
  let streams: string;
  try {
    await w.stack.run(["stack", "export", "--show-secrets", "--file", revealed]);
    streams = commandStreams(readFileSync(revealed, "utf8"));
  } finally {
    rmSync(path.dirname(revealed), { recursive: true, force: true });
  }
  const printed = w.log.join("\n");
  const holders = filesHoldingSecrets(path.join(w.root, "host"), secrets);
  return {
    inState: secrets.filter((s) => state.includes(s) || streams.includes(s)),
    inOutput: secrets.filter((s) => printed.includes(s)),
    inFiles: holders.filter((f) => !/\/releases\/[^/]+\/config\.yaml$/.test(f)),
    configModes: [...new Set(holders.map((f) => lstatSync(f).mode & 0o777))],
  };
}

/**
 * The stdout and stderr of every command resource in a `stack export --show-secrets`, decrypted
 * (a secret value there is `{…sig…, plaintext: "<JSON>"}`), joined into one text to search.
 */
export function commandStreams(exported: string): string {
  const resources = (JSON.parse(exported) as { deployment?: { resources?: Array<{ type: string; outputs?: Record<string, unknown> }> } }).deployment?.resources ?? [];
  const reveal = (v: unknown): string => {
    if (typeof v === "string") return v;
    if (v && typeof v === "object" && typeof (v as { plaintext?: unknown }).plaintext === "string") {
      const p = (v as { plaintext: string }).plaintext;
      try {
        return reveal(JSON.parse(p));
      } catch {
        return p;
      }
    }
    return v === undefined ? "" : JSON.stringify(v);
  };
  return resources
    .filter((r) => r.type.startsWith("command:"))
    .flatMap((r) => [reveal(r.outputs?.stdout), reveal(r.outputs?.stderr)])
    .join("\n");
}

/** Every regular file under `dir` that contains one of `secrets`, except the 0600 config files that must hold them. */
export function filesHoldingSecrets(dir: string, secrets: string[]): string[] {
  const hits: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = path.join(d, name);
      const st = lstatSync(p, { throwIfNoEntry: false });
      if (!st || st.isSymbolicLink()) continue;
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && st.size < 64 * 1024 * 1024) {
        const text = readFileSync(p).toString("latin1");
        if (secrets.some((s) => text.includes(s))) hits.push(p);
      }
    }
  };
  if (existsSync(dir)) walk(dir);
  return hits;
}
