/**
 * Shared setup for the host-script integration tests: a release mirror (the
 * progressdb stand-in, or the real archives), sshd, MinIO and (optionally)
 * supervisord — all on 127.0.0.1, started here and stopped by `stop()`. Plus
 * helpers that run the rendered scripts through SSH exactly as remote.Command
 * would (script text as the ssh command, secrets on stdin), and clients for
 * both API dialects (0.1.x `/v1`, 0.2.x `/frontend/v1`).
 */
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import * as zlib from "node:zlib";
import {
  renderBackupScript,
  renderOffsiteScript,
  renderConfigureScript,
  renderFinalizeScript,
  renderInstallScript,
  renderMigrateScript,
  renderPreflightScript,
  renderRestoreScript,
  renderSecretsStdin,
  type BackupMode,
  type BackupResult,
  type HostParams,
  type HostSecrets,
  type InstallResult,
  type MigrateResult,
  type PreflightParams,
  type PreflightResult,
  type RestoreResult,
  type S3Params,
  type ServiceManager,
} from "../../components/hostScripts";
import { familyOf, type ServiceConfig } from "../../components/releases";
import { minioUnavailable, startMinio, awsCliPath, type MinioHandle } from "../fixtures/minio";
import { freePort, tempDir, run, type RunResult } from "../fixtures/net";
import { realReleasesDir, startReleaseMirror, type BuildSpec, type ReleaseMirror } from "../fixtures/releases";
import { runRemote, startSshd, type SshdHandle } from "../fixtures/sshd";
import { startSupervisor, type SupervisorHandle } from "../fixtures/supervisor";

/** The service's API keys, as the program renders them into its config file (never its environment). */
export const KEYS = {
  backend: "sk_itest_backend_7f3a91",
  frontend: "pk_itest_frontend_52c0de",
  admin: "ak_itest_admin_9e41b7",
  signing: "sg_itest_signing_d08a66",
} as const;
export const AUTHOR = "itest-user";
/** The backend key (also what other suites set as the stack's progressdb:apiKey). */
export const BACKEND_KEY = KEYS.backend;

/** Empty when everything the integration tests need is installed, else why not. */
export function integrationUnavailable(): string | undefined {
  const why = minioUnavailable();
  if (why) return why;
  for (const f of ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen", awsCliPath]) {
    if (!fs.existsSync(f)) return `${f} is missing (apt-get install openssh-server openssh-client awscli)`;
  }
  return undefined;
}

export function skipMessage(suite: string, extra?: string): string | undefined {
  const why = integrationUnavailable() ?? extra;
  if (why) {
    const msg = `\n\n*** SKIPPING ${suite}: ${why} ***\n`;
    console.warn(msg);
    return msg;
  }
  return undefined;
}

/** Why the real 0.1.2/0.2.1 archives cannot be served here ("" when they can). */
export function realReleasesUnavailable(): string {
  const dir = realReleasesDir();
  const arch = process.arch === "x64" ? "amd64" : process.arch;
  if (!dir) return "no real release dir (set PDB_RELEASES_DIR or provide ../shared/progressdb-releases)";
  for (const f of ["0.1.2/progressdb_0.1.2_linux_", "0.2.1/progressdb_0.2.1_linux_", "0.2.1/prgcli_0.2.1_linux_"]) {
    const p = path.join(dir, `${f}${arch}.tar.gz`);
    if (!fs.existsSync(p)) return `${p} is missing`;
  }
  return "";
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
          const argv = fs.readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0");
          // The launcher execs ./progressdb in <installDir>/current: match the cwd too.
          return argv[0].startsWith(prefix) || (argv[0] === "./progressdb" && fs.readlinkSync(`/proc/${p}/cwd`).startsWith(prefix));
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

export async function startWorld(opts: { supervisor?: boolean; versions?: BuildSpec[]; fromDir?: string } = {}): Promise<World> {
  const started: Array<{ stop(): Promise<void> }> = [];
  try {
    const [mirror, sshd, minio] = await Promise.all([
      startReleaseMirror({ versions: opts.versions, fromDir: opts.fromDir }),
      startSshd(),
      startMinio(),
    ]);
    started.push(mirror, sshd, minio);
    const supervisor = opts.supervisor ? await startSupervisor() : undefined;
    if (supervisor) started.push(supervisor);
    const root = tempDir("hosts");
    // mkdtemp makes it 0700: the service runs as its own user, which must reach the hosts' dirs.
    fs.chmodSync(root, 0o755);
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
        // Supervisor first (stops its programs), then detached services, then the rest.
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
  /** Embedded-KMS master key (0.2.x) / encryption key (0.1.x), rendered into the config file ("" for none). */
  kmsKeyHex: string;
  /** Message fields encrypted at rest (none when unset). */
  encryptFields?: string[];
}

/** A fresh "host" (directories under the world root; same machine via SSH). */
export async function newHost(
  w: World,
  name: string,
  manager: ServiceManager,
  extra: Partial<HostParams> & { withSeparateKms?: boolean; encryptFields?: string[] } = {},
): Promise<TestHost> {
  const base = path.join(w.root, name);
  fs.mkdirSync(base, { recursive: true });
  const port = await freePort();
  const { withSeparateKms, encryptFields, ...rest } = extra;
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
    // storage.kmsDataDir: KMS data the operator keeps outside the data dir, backed up with it.
    params.kmsDataDir = path.join(base, "var", "lib", "progressdb-kms");
    fs.mkdirSync(path.dirname(params.kmsDataDir), { recursive: true });
    fs.mkdirSync(params.kmsDataDir, { mode: 0o700 });
    fs.writeFileSync(path.join(params.kmsDataDir, "wrapped-deks.json"), JSON.stringify({ dek: crypto.randomBytes(48).toString("base64") }), { mode: 0o600 });
  }
  const h: TestHost = {
    params,
    port,
    url: `http://127.0.0.1:${port}`,
    kmsKeyHex: crypto.randomBytes(32).toString("hex"),
    encryptFields: encryptFields ?? [],
  };
  w.hosts.push(h);
  return h;
}

/** Every secret a host's scripts or service may see: none may leak anywhere. */
export function secretsOf(w: World, h: TestHost): string[] {
  return [...Object.values(KEYS), h.kmsKeyHex, w.secrets.awsAccessKeyId, w.secrets.awsSecretAccessKey].filter((s) => s !== "");
}

/** The config file the program renders for `version` on this host (its family's renderer). */
export function serviceConfig(h: TestHost, version: string, o: { signing?: string[] } = {}): string {
  const c: ServiceConfig = {
    listenAddr: h.params.listenAddr,
    dbPath: h.params.dbPath,
    keys: { backend: [KEYS.backend], frontend: [KEYS.frontend], admin: [KEYS.admin], signing: o.signing ?? [KEYS.signing] },
    rateLimit: { rps: 200, burst: 400 },
    maxPayloadSize: "100KB",
    encryptFields: h.encryptFields ?? [],
    kmsMasterKeyHex: h.kmsKeyHex || undefined,
    logLevel: "info",
  };
  return familyOf(version).renderConfig(c);
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

export async function runScript<T>(w: World, script: string, secrets: HostSecrets): Promise<ScriptRun<T>> {
  const stdin = renderSecretsStdin(secrets);
  const r = await runRemote(w.sshd, script, { stdin, timeoutMs: 150_000 });
  return { ...r, json: r.code === 0 ? parse<T>(r) : undefined, script, stdin };
}

export function preflight(
  w: World,
  h: TestHost,
  version: string,
  o: {
    s3?: S3Params | null;
    secrets?: HostSecrets;
    minFreeMb?: number;
    sha256?: string;
    /** Stage the release's prgcli (true: the mirror's), as the program does for a 0.2.x target. */
    tool?: boolean | { url: string; archiveName: string };
    checksumsUrl?: string;
    artifactUrl?: string;
    targetLayout?: PreflightParams["targetLayout"];
    operatorConfig?: PreflightParams["operatorConfig"];
    backupMode?: BackupMode;
  } = {},
) {
  const rel = w.mirror.release(version);
  const tool =
    o.tool === true ? { url: rel.prgcliArtifactUrl!, archiveName: rel.prgcliArchiveName! } : o.tool === false || o.tool === undefined ? undefined : o.tool;
  const script = renderPreflightScript({
    host: h.params,
    version,
    artifactUrl: o.artifactUrl ?? rel.artifactUrl,
    checksumsUrl: o.checksumsUrl ?? rel.checksumsUrl,
    archiveName: rel.archiveName,
    sha256: o.sha256,
    minFreeMb: o.minFreeMb ?? 50,
    s3: o.s3 === null ? undefined : (o.s3 ?? w.s3),
    targetLayout: o.targetLayout ?? familyOf(version).dataLayout,
    migrationTool: tool,
    operatorConfig: o.operatorConfig,
    backupMode: o.backupMode,
  });
  return runScript<PreflightResult>(w, script, o.secrets ?? w.secrets);
}

export type BackupJson = Partial<Extract<BackupResult, { uri: string }>> & { skipped?: boolean; reason?: string; fromVersion?: string; snapshot?: string };

export function backup(
  w: World,
  h: TestHost,
  version: string,
  o: { s3?: S3Params; secrets?: HostSecrets; stack?: string; runKey?: string; mode?: BackupMode; minFreeMb?: number } = {},
) {
  const script = renderBackupScript({ host: h.params, version, runKey: o.runKey ?? version, stack: o.stack ?? "itest", s3: o.s3 ?? w.s3, mode: o.mode, minFreeMb: o.minFreeMb });
  return runScript<BackupJson>(w, script, o.secrets ?? w.secrets);
}

/** The offsite step for the backup recorded under `runKey` (the version by default). */
export function offsite(w: World, h: TestHost, version: string, o: { s3?: S3Params; secrets?: HostSecrets; stack?: string; runKey?: string; waitSeconds?: number } = {}) {
  const script = renderOffsiteScript({ host: h.params, version, runKey: o.runKey ?? version, stack: o.stack ?? "itest", s3: o.s3 ?? w.s3, waitSeconds: o.waitSeconds });
  return runScript<BackupJson>(w, script, o.secrets ?? w.secrets);
}

export function migrate(
  w: World,
  h: TestHost,
  version: string,
  o: { expectThreads?: number; expectMessages?: number; runKey?: string; toolArchive?: string } = {},
) {
  const rel = w.mirror.release(version);
  const script = renderMigrateScript({
    host: h.params,
    version,
    toolArchive: o.toolArchive ?? path.join(h.params.installDir, "staging", version, rel.prgcliArchiveName!),
    expectThreads: o.expectThreads,
    expectMessages: o.expectMessages,
    runKey: o.runKey ?? version,
  });
  return runScript<MigrateResult>(w, script, w.secrets);
}

export function install(
  w: World,
  h: TestHost,
  version: string,
  o: {
    autoRevertSeconds?: number;
    keepReleases?: number;
    backupUri?: string;
    /** The rendered config on stdin; null sends none (an operator-managed configFile). */
    config?: string | null;
    targetLayout?: "root" | "store";
  } = {},
) {
  const rel = w.mirror.release(version);
  const script = renderInstallScript({
    host: h.params,
    version,
    archiveName: rel.archiveName,
    keepReleases: o.keepReleases ?? 3,
    healthUrl: h.url,
    autoRevertSeconds: o.autoRevertSeconds ?? 20,
    backupUri: o.backupUri,
    targetLayout: o.targetLayout ?? familyOf(version).dataLayout,
  });
  const config = o.config === null ? undefined : (o.config ?? serviceConfig(h, version));
  return runScript<InstallResult>(w, script, config === undefined ? {} : { serviceConfig: config });
}

export function finalize(w: World, h: TestHost, o: { version: string; previousVersion: string; continuity: string; finding?: string }) {
  const script = renderFinalizeScript({ host: h.params, ...o, finding: o.finding ?? "", healthUrl: h.url });
  return runScript<{ version: string; committed: boolean }>(w, script, {});
}

export function configure(w: World, h: TestHost, config: string) {
  return runScript<{ config: string; changed: boolean }>(w, renderConfigureScript(h.params), { serviceConfig: config });
}

export type RestoreJson = RestoreResult;

/** Restores `uri`, which must download with `sha256` (the program passes the one its ledger recorded). */
export function restore(w: World, h: TestHost, backup: { uri: string; sha256: string }, version: string, o: { secrets?: HostSecrets } = {}) {
  const script = renderRestoreScript({ host: h.params, uri: backup.uri, sha256: backup.sha256, version, s3: w.s3, healthUrl: h.url });
  return runScript<RestoreJson>(w, script, o.secrets ?? w.secrets);
}

/** First install of `version` (preflight + install), as a fresh host would get. */
export async function provision(w: World, h: TestHost, version: string): Promise<InstallResult> {
  const p = await preflight(w, h, version, { s3: null });
  if (p.code !== 0) throw new Error(`preflight ${version} failed (${p.code}): ${p.stderr}`);
  const i = await install(w, h, version);
  if (i.code !== 0 || !i.json) throw new Error(`install ${version} failed (${i.code}): ${i.stderr}`);
  return i.json;
}

// ---- observing the world ----------------------------------------------------

export async function readyz(h: TestHost): Promise<{ status: number; body: { status?: string; version?: string } }> {
  try {
    const res = await fetch(`${h.url}/readyz`, { signal: AbortSignal.timeout(2000) });
    const text = await res.text();
    let body: { status?: string; version?: string } = {};
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      /* 0.1.x answers 401/404 with a text or error body */
    }
    return { status: res.status, body };
  } catch {
    return { status: 0, body: {} };
  }
}

export async function healthz(h: TestHost): Promise<number> {
  try {
    return (await fetch(`${h.url}/healthz`, { signal: AbortSignal.timeout(2000) })).status;
  } catch {
    return 0;
  }
}

/** The pid listening on TCP `port` (from /proc/net/tcp{,6} and the socket inodes in /proc/<pid>/fd). */
export function listenerPid(port: number): number | undefined {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const inodes = new Set<string>();
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = fs.readFileSync(f, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[1].endsWith(hex) && cols[3] === "0A") inodes.add(cols[9]);
    }
  }
  if (!inodes.size) return undefined;
  for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m && inodes.has(m[1])) return Number(pid);
      } catch {
        /* fd closed */
      }
    }
  }
  return undefined;
}

/** Which binary answers on the host's port: its pid, exe path and sha256. */
export function whoListens(h: TestHost): { pid: number; exe: string; sha256: string } | undefined {
  const pid = listenerPid(h.port);
  if (pid === undefined) return undefined;
  try {
    return { pid, exe: fs.readlinkSync(`/proc/${pid}/exe`), sha256: sha256File(`/proc/${pid}/exe`) };
  } catch {
    return undefined;
  }
}

/**
 * The version that answers, proved the way the program proves it: /readyz for
 * 0.2.x; for 0.1.x (no /readyz: 401/404), /healthz ok and the listening
 * process running releases/<v>/progressdb of this host (by sha256).
 */
export async function answeringVersion(h: TestHost): Promise<string | undefined> {
  const r = await readyz(h);
  if (r.status === 200 && r.body.version) return r.body.version.replace(/^v/, "");
  if ((r.status === 401 || r.status === 404) && (await healthz(h)) === 200) {
    const who = whoListens(h);
    const releases = path.join(h.params.installDir, "releases");
    if (!who || !fs.existsSync(releases)) return undefined;
    for (const v of fs.readdirSync(releases)) {
      const bin = path.join(releases, v, "progressdb");
      if (fs.existsSync(bin) && sha256File(bin) === who.sha256) return v;
    }
  }
  return undefined;
}

interface ApiOptions {
  key?: string;
  user?: string;
  body?: unknown;
}

export async function api<T>(h: TestHost, method: string, p: string, o: ApiOptions = {}): Promise<{ status: number; json: T; text: string }> {
  for (let attempt = 0; ; attempt++) {
    const headers: Record<string, string> = { "X-API-Key": o.key ?? KEYS.backend, "Content-Type": "application/json" };
    if (o.user) headers["X-User-ID"] = o.user;
    const res = await fetch(`${h.url}${p}`, {
      method,
      headers,
      body: o.body === undefined ? undefined : JSON.stringify(o.body),
      signal: AbortSignal.timeout(5000),
    });
    const text = await res.text();
    if (res.status === 429 && attempt < 20) {
      await new Promise((r) => setTimeout(r, 250));
      continue;
    }
    let json = {} as T;
    try {
      json = (text ? JSON.parse(text) : {}) as T;
    } catch {
      /* not JSON */
    }
    return { status: res.status, json, text };
  }
}

export interface Sample {
  /** 0.1.x thread id or 0.2.x thread key. */
  threadKey: string;
  title: string;
  bodies: unknown[];
}

/**
 * Writes a thread with `n` messages through the API of `version`'s family.
 * (`writeSampleData(h, n)`, without a version, writes through the 0.2.x API.)
 */
export async function writeSampleData(h: TestHost, version: string | number, n = 3, title = `canary ${crypto.randomBytes(3).toString("hex")}`): Promise<Sample> {
  if (typeof version === "number") return writeSampleData(h, "0.2.1", version);
  const bodies: unknown[] = [];
  const nextBody = (i: number) => ({ text: `message ${i} of ${title} — ${crypto.randomBytes(6).toString("hex")}` });
  if (familyOf(version).dialect === "v1") {
    const t = await api<{ id: string }>(h, "POST", "/v1/threads", { body: { author: AUTHOR, title } });
    if (t.status !== 200) throw new Error(`create thread at ${version}: ${t.status} ${t.text}`);
    for (let i = 0; i < n; i++) {
      const body = nextBody(i);
      const m = await api(h, "POST", `/v1/threads/${encodeURIComponent(t.json.id)}/messages`, { body: { author: AUTHOR, body } });
      if (m.status !== 200) throw new Error(`post message at ${version}: ${m.status} ${m.text}`);
      bodies.push(body);
    }
    return { threadKey: t.json.id, title, bodies };
  }
  const t = await api<{ key: string }>(h, "POST", "/frontend/v1/threads", { user: AUTHOR, body: { title } });
  if (t.status !== 202) throw new Error(`create thread at ${version}: ${t.status} ${t.text}`);
  for (let i = 0; i < n; i++) {
    const body = nextBody(i);
    // 0.2.x applies writes asynchronously (the real one a few ms after the 202): retry until the thread exists.
    for (let attempt = 0; ; attempt++) {
      const m = await api(h, "POST", `/frontend/v1/threads/${encodeURIComponent(t.json.key)}/messages`, { user: AUTHOR, body: { body } });
      if (m.status === 202) break;
      if (attempt > 50) throw new Error(`post message at ${version}: ${m.status} ${m.text}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    bodies.push(body);
  }
  for (let attempt = 0; (await readMessages(h, version, t.json.key).catch(() => [])).length < n; attempt++) {
    if (attempt > 100) throw new Error(`${version} never applied the writes to ${t.json.key}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { threadKey: t.json.key, title, bodies };
}

/**
 * The bodies of a thread's messages, oldest first, read through `version`'s API.
 * (`readMessages(h, threadKey)`, without a version, reads through the 0.2.x API.)
 */
export async function readMessages(h: TestHost, version: string, threadKey?: string): Promise<unknown[]> {
  if (threadKey === undefined) return readMessages(h, "0.2.1", version);
  const v1 = familyOf(version).dialect === "v1";
  const p = v1
    ? `/v1/threads/${encodeURIComponent(threadKey)}/messages?author=${AUTHOR}`
    : `/frontend/v1/threads/${encodeURIComponent(threadKey)}/messages?limit=100`;
  const r = await api<{ messages: Array<{ body: unknown }> | null }>(h, "GET", p, { user: v1 ? undefined : AUTHOR });
  if (r.status !== 200) throw new Error(`list messages at ${version}: ${r.status} ${r.text}`);
  return (r.json.messages ?? []).map((m) => m.body);
}

/** The author's threads (key and title) through `version`'s API. */
export async function listThreads(h: TestHost, version: string): Promise<Array<{ key: string; title: string }>> {
  if (familyOf(version).dialect === "v1") {
    const r = await api<{ threads: Array<{ id: string; title: string }> | null }>(h, "GET", `/v1/threads?author=${AUTHOR}`);
    if (r.status !== 200) throw new Error(`list threads at ${version}: ${r.status} ${r.text}`);
    return (r.json.threads ?? []).map((t) => ({ key: t.id, title: t.title }));
  }
  const r = await api<{ threads: Array<{ key: string; title: string }> | null }>(h, "GET", "/frontend/v1/threads?limit=100", { user: AUTHOR });
  if (r.status !== 200) throw new Error(`list threads at ${version}: ${r.status} ${r.text}`);
  return (r.json.threads ?? []).map((t) => ({ key: t.key, title: t.title }));
}

/** A sample's messages as `version` serves them, found by the thread's title (keys change in a migration). */
export async function readByTitle(h: TestHost, version: string, title: string): Promise<unknown[] | undefined> {
  const t = (await listThreads(h, version)).find((x) => x.title === title);
  return t ? readMessages(h, version, t.key) : undefined;
}

export async function stats(h: TestHost): Promise<{ threads: number; messages: number }> {
  const r = await api<{ threads: number; messages: number }>(h, "GET", "/admin/stats", { key: KEYS.admin });
  if (r.status !== 200) throw new Error(`/admin/stats: ${r.status} ${r.text}`);
  return r.json;
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

export function currentLink(h: TestHost): string {
  return fs.readlinkSync(path.join(h.params.installDir, "current"));
}

export function releaseDir(h: TestHost, version: string): string {
  return path.join(h.params.installDir, "releases", version);
}

export function keptData(h: TestHost): { path: string; from: string; to: string; at: string } | undefined {
  const f = path.join(h.params.installDir, "kept-data");
  return fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, "utf8")) as { path: string; from: string; to: string; at: string }) : undefined;
}

export function upgradeLog(h: TestHost): string {
  const f = path.join(h.params.installDir, "logs", "upgrade.log");
  return fs.existsSync(f) ? fs.readFileSync(f, "utf8") : "";
}

export function serviceLog(h: TestHost): string {
  const f = path.join(h.params.installDir, "logs", `${h.params.serviceName}.log`);
  return fs.existsSync(f) ? fs.readFileSync(f, "utf8") : "";
}

/** sha256 over (relative path, type, mode, content) of every entry, sorted; `skip` names top-level entries to leave out. */
export function treeHash(dir: string, skip: string[] = []): string {
  const entries: string[] = [];
  const walk = (d: string) => {
    for (const name of fs.readdirSync(d).sort()) {
      const p = path.join(d, name);
      const rel = path.relative(dir, p);
      if (skip.includes(rel)) continue;
      const st = fs.lstatSync(p);
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

/** Every file under `dir` (relative paths), for "does any of these contain a secret" checks. */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return out;
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

/** Extracts a backup (tar.zst, or tar.gz: GNU tar tells them by their bytes). */
export async function untar(archive: string, dest: string): Promise<RunResult> {
  fs.mkdirSync(dest, { recursive: true });
  return run("tar", ["-xf", archive, "-C", dest]);
}

/** A backup archive's uncompressed bytes (the tar stream). */
export function plainArchive(archive: string): Buffer {
  const bytes = fs.readFileSync(archive);
  if (bytes.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return execFileSync("zstd", ["-dc", archive], { maxBuffer: 1 << 30 });
  return zlib.gunzipSync(bytes);
}

/** The member names of a backup object in S3. */
export async function backupListing(w: World, key: string): Promise<string[]> {
  const dir = tempDir("listing");
  try {
    const archive = path.join(dir, "b.tar");
    await downloadObject(w, key, archive);
    const r = await run("tar", ["-tf", archive]);
    if (r.code !== 0) throw new Error(`tar -tf: ${r.stderr}`);
    return r.stdout.split("\n").filter(Boolean);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
