/**
 * Shared setup for the host-script integration tests: a release mirror of the
 * progressdb stand-in, sshd, MinIO and (optionally) supervisord — all on
 * 127.0.0.1, started here and stopped by `stop()`. Plus helpers that run the
 * rendered scripts through SSH exactly as remote.Command would.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  renderBackupScript,
  renderInstallScript,
  renderPreflightScript,
  renderRestoreScript,
  renderSecretsStdin,
  type HostParams,
  type HostSecrets,
  type S3Params,
  type ServiceManager,
} from "../../components/hostScripts";
import { minioUnavailable, startMinio, awsCliPath, type MinioHandle } from "../fixtures/minio";
import { freePort, tempDir, run, type RunResult } from "../fixtures/net";
import { startReleaseMirror, type BuildSpec, type ReleaseMirror } from "../fixtures/releases";
import { runRemote, startSshd, type SshdHandle } from "../fixtures/sshd";
import { startSupervisor, type SupervisorHandle } from "../fixtures/supervisor";

export const BACKEND_KEY = "sk_example";

/** Empty when everything the integration tests need is installed, else why not. */
export function integrationUnavailable(): string | undefined {
  const why = minioUnavailable();
  if (why) return why;
  for (const f of ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen", awsCliPath]) {
    if (!fs.existsSync(f)) return `${f} is missing (apt-get install openssh-server openssh-client awscli)`;
  }
  return undefined;
}

export function skipMessage(suite: string): string | undefined {
  const why = integrationUnavailable();
  if (why) {
    const msg = `\n\n*** SKIPPING ${suite}: ${why} ***\n`;
    console.warn(msg);
    return msg;
  }
  return undefined;
}

export interface World {
  sshd: SshdHandle;
  minio: MinioHandle;
  mirror: ReleaseMirror;
  supervisor?: SupervisorHandle;
  root: string;
  s3: S3Params;
  secrets: Required<Pick<HostSecrets, "awsAccessKeyId" | "awsSecretAccessKey">>;
  /** Hosts made by newHost (their services are stopped by stop()). */
  hosts: TestHost[];
  stop(): Promise<void>;
}

/**
 * Stops every process whose command line runs a binary under `root` (the
 * stand-ins started by the scripts, fully detached by design): SIGTERM, wait,
 * then SIGKILL. Only processes under this world's temp dir are touched.
 */
export async function stopProcessesUnder(root: string): Promise<void> {
  const prefix = `${root}/`;
  const pids = () =>
    fs
      .readdirSync("/proc")
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return fs.readFileSync(`/proc/${p}/cmdline`, "utf8").startsWith(prefix);
        } catch {
          return false;
        }
      })
      .map(Number);
  for (const pid of pids()) {
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      /* gone */
    }
  }
  const deadline = Date.now() + 10_000;
  while (pids().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  for (const pid of pids()) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
}

export async function startWorld(opts: { supervisor?: boolean; versions?: BuildSpec[] } = {}): Promise<World> {
  const started: Array<{ stop(): Promise<void> }> = [];
  try {
    const [mirror, sshd, minio] = await Promise.all([
      startReleaseMirror({ versions: opts.versions }),
      startSshd(),
      startMinio(),
    ]);
    started.push(mirror, sshd, minio);
    const supervisor = opts.supervisor ? await startSupervisor() : undefined;
    if (supervisor) started.push(supervisor);
    const root = tempDir("hosts");
    return {
      hosts: [],
      sshd,
      minio,
      mirror,
      supervisor,
      root,
      s3: { bucket: minio.bucket, prefix: "progressdb-backups", endpoint: minio.endpoint, region: minio.region },
      secrets: { awsAccessKeyId: minio.accessKeyId, awsSecretAccessKey: minio.secretAccessKey },
      async stop() {
        // Supervisor first (stops its programs), then detached stand-ins, then the rest.
        const [first, ...rest] = started.reverse();
        if (supervisor) await first.stop().catch(() => undefined);
        await stopProcessesUnder(root);
        for (const s of supervisor ? rest : [first, ...rest]) await s.stop().catch(() => undefined);
        fs.rmSync(root, { recursive: true, force: true });
      },
    };
  } catch (e) {
    for (const s of started.reverse()) await s.stop().catch(() => undefined);
    throw e;
  }
}

export interface TestHost {
  params: HostParams;
  port: number;
  url: string;
  kmsKeyHex: string;
}

/** A fresh "host" (directories under the world root; same machine via SSH). */
export async function newHost(
  w: World,
  name: string,
  manager: ServiceManager,
  extra: Partial<HostParams> & { withSeparateKms?: boolean } = {},
): Promise<TestHost> {
  const base = path.join(w.root, name);
  fs.mkdirSync(base, { recursive: true });
  const port = await freePort();
  const { withSeparateKms, ...rest } = extra;
  const params: HostParams = {
    installDir: path.join(base, "opt", "progressdb"),
    dbPath: path.join(base, "var", "lib", "progressdb"),
    serviceManager: manager,
    serviceName: `pdb-${name}`,
    listenAddr: `127.0.0.1:${port}`,
    awsCli: awsCliPath,
    stopTimeoutSeconds: 10,
    ...(manager === "supervisor" && w.supervisor
      ? { supervisorConfDir: w.supervisor.confDir, supervisorctlConfig: w.supervisor.configPath }
      : {}),
    ...rest,
  };
  if (withSeparateKms) {
    // v0.1.x keeps embedded-KMS data in its own dir, set through the config file.
    params.kmsDataDir = path.join(base, "var", "lib", "progressdb-kms");
    params.configFile = path.join(base, "etc", "progressdb.yaml");
    fs.mkdirSync(path.dirname(params.configFile), { recursive: true });
    fs.writeFileSync(params.configFile, `encryption:\n  kms:\n    mode: "embedded"\n    data_dir: "${params.kmsDataDir}"\n`);
  }
  const h = { params, port, url: `http://127.0.0.1:${port}`, kmsKeyHex: crypto.randomBytes(32).toString("hex") };
  w.hosts.push(h);
  return h;
}

export interface ScriptRun<T> extends RunResult {
  json?: T;
  script: string;
  stdin: string;
}

function parse<T>(r: RunResult): T | undefined {
  const lines = r.stdout.trim().split("\n").filter(Boolean);
  if (lines.length !== 1) return undefined;
  try {
    return JSON.parse(lines[0]) as T;
  } catch {
    return undefined;
  }
}

async function runScript<T>(w: World, script: string, secrets: HostSecrets): Promise<ScriptRun<T>> {
  const stdin = renderSecretsStdin(secrets);
  const r = await runRemote(w.sshd, script, { stdin, timeoutMs: 150_000 });
  return { ...r, json: r.code === 0 ? parse<T>(r) : undefined, script, stdin };
}

export function preflight(
  w: World,
  h: TestHost,
  version: string,
  o: { s3?: S3Params | null; secrets?: HostSecrets; minFreeMb?: number; sha256?: string } = {},
) {
  const rel = w.mirror.release(version);
  const script = renderPreflightScript({
    host: h.params,
    version,
    artifactUrl: rel.artifactUrl,
    checksumsUrl: rel.checksumsUrl,
    archiveName: rel.archiveName,
    sha256: o.sha256,
    minFreeMb: o.minFreeMb ?? 50,
    s3: o.s3 === null ? undefined : (o.s3 ?? w.s3),
  });
  return runScript<{ archive: string; sha256: string; reused: boolean }>(w, script, o.secrets ?? w.secrets);
}

export interface BackupJson {
  uri?: string;
  bucket?: string;
  key?: string;
  size?: number;
  sha256?: string;
  fromVersion?: string;
  toVersion?: string;
  skipped?: boolean;
  reason?: string;
}

export function backup(w: World, h: TestHost, version: string, o: { s3?: S3Params; secrets?: HostSecrets; stack?: string } = {}) {
  const script = renderBackupScript({ host: h.params, version, stack: o.stack ?? "itest", s3: o.s3 ?? w.s3 });
  return runScript<BackupJson>(w, script, o.secrets ?? w.secrets);
}

export function install(w: World, h: TestHost, version: string, o: { autoRevertSeconds?: number; keepReleases?: number; secrets?: HostSecrets; backupUri?: string } = {}) {
  const rel = w.mirror.release(version);
  const script = renderInstallScript({
    host: h.params,
    version,
    archiveName: rel.archiveName,
    keepReleases: o.keepReleases ?? 3,
    healthUrl: h.url,
    autoRevertSeconds: o.autoRevertSeconds ?? 20,
    backupUri: o.backupUri,
  });
  return runScript<{ version: string; previousVersion: string }>(w, script, o.secrets ?? { kmsMasterKeyHex: h.kmsKeyHex });
}

export interface RestoreJson {
  restored: string;
  sha256: string;
  size: number;
  movedAside: string[];
  started: boolean;
}

export function restore(w: World, h: TestHost, request: string, version: string, o: { stack?: string; secrets?: HostSecrets } = {}) {
  const script = renderRestoreScript({ host: h.params, request, version, stack: o.stack ?? "itest", s3: w.s3, healthUrl: h.url });
  return runScript<RestoreJson>(w, script, o.secrets ?? w.secrets);
}

/** First install of `version` (preflight + install), as a fresh host would get. */
export async function provision(w: World, h: TestHost, version: string): Promise<void> {
  const p = await preflight(w, h, version, { s3: null });
  if (p.code !== 0) throw new Error(`preflight ${version} failed (${p.code}): ${p.stderr}`);
  const i = await install(w, h, version);
  if (i.code !== 0) throw new Error(`install ${version} failed (${i.code}): ${i.stderr}`);
}

// ---- observing the world ----------------------------------------------------

export async function readyz(h: TestHost): Promise<{ status: number; body: { status?: string; version?: string } }> {
  try {
    const res = await fetch(`${h.url}/readyz`, { signal: AbortSignal.timeout(2000) });
    return { status: res.status, body: (await res.json()) as { status?: string; version?: string } };
  } catch {
    return { status: 0, body: {} };
  }
}

async function api<T>(h: TestHost, method: string, p: string, body?: unknown): Promise<{ status: number; json: T }> {
  const res = await fetch(`${h.url}${p}`, {
    method,
    headers: { "X-API-Key": BACKEND_KEY, "X-User-ID": "itest-user", "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  return { status: res.status, json: (text ? JSON.parse(text) : {}) as T };
}

/** Writes a thread with messages through the stand-in's API; returns what to read back. */
export async function writeSampleData(h: TestHost, n = 3): Promise<{ threadKey: string; bodies: unknown[] }> {
  const t = await api<{ key: string }>(h, "POST", "/frontend/v1/threads", { title: "upgrade canary" });
  if (t.status !== 202) throw new Error(`create thread: ${t.status} ${JSON.stringify(t.json)}`);
  const bodies: unknown[] = [];
  for (let i = 0; i < n; i++) {
    const body = { text: `message ${i} — ${crypto.randomBytes(6).toString("hex")}` };
    const m = await api(h, "POST", `/frontend/v1/threads/${encodeURIComponent(t.json.key)}/messages`, { body });
    if (m.status !== 202) throw new Error(`post message: ${m.status}`);
    bodies.push(body);
  }
  return { threadKey: t.json.key, bodies };
}

export async function readMessages(h: TestHost, threadKey: string): Promise<unknown[]> {
  const r = await api<{ messages: Array<{ body: unknown }> }>(h, "GET", `/frontend/v1/threads/${encodeURIComponent(threadKey)}/messages`);
  if (r.status !== 200) throw new Error(`list messages: ${r.status} ${JSON.stringify(r.json)}`);
  return r.json.messages.map((m) => m.body);
}

export function pidOf(h: TestHost): number | undefined {
  const f = path.join(h.params.installDir, "run", `${h.params.serviceName}.pid`);
  if (!fs.existsSync(f)) return undefined;
  const pid = Number(fs.readFileSync(f, "utf8").trim());
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

/** sha256 over (relative path, type, mode, content) of every entry, sorted. */
export function treeHash(dir: string): string {
  const entries: string[] = [];
  const walk = (d: string) => {
    for (const name of fs.readdirSync(d).sort()) {
      const p = path.join(d, name);
      const st = fs.lstatSync(p);
      const rel = path.relative(dir, p);
      if (st.isDirectory()) {
        entries.push(`d ${rel} ${(st.mode & 0o7777).toString(8)}`);
        walk(p);
      } else if (st.isSymbolicLink()) {
        entries.push(`l ${rel} ${fs.readlinkSync(p)}`);
      } else {
        const h = crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex");
        entries.push(`f ${rel} ${(st.mode & 0o7777).toString(8)} ${st.size} ${h}`);
      }
    }
  };
  walk(dir);
  return crypto.createHash("sha256").update(entries.join("\n")).digest("hex");
}

export function sha256File(p: string): string {
  return crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex");
}

/**
 * Samples every process's argv (/proc/<pid>/cmdline) every few ms until
 * stopped; returns all distinct command lines seen.
 */
export function startCmdlinePoller(intervalMs = 15): { stop(): string[] } {
  const seen = new Set<string>();
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    for (const pid of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(pid)) continue;
      try {
        const c = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
        if (c) seen.add(c.replace(/\0/g, " "));
      } catch {
        /* process exited */
      }
    }
    setTimeout(tick, intervalMs);
  };
  tick();
  return {
    stop() {
      stopped = true;
      return [...seen];
    },
  };
}

export async function downloadObject(w: World, key: string, out: string): Promise<void> {
  const r = await w.minio.aws(["s3", "cp", "--only-show-errors", `s3://${w.minio.bucket}/${key}`, out]);
  if (r.code !== 0) throw new Error(`download ${key}: ${r.stderr}`);
}

export async function untar(archive: string, dest: string): Promise<RunResult> {
  fs.mkdirSync(dest, { recursive: true });
  return run("tar", ["-xzf", archive, "-C", dest]);
}
