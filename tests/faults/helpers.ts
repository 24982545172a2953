/**
 * Fixtures the engine-level fault suite needs beyond tests/integration/world.ts:
 * an sshd that can be cut and restarted on the same port with the same keys,
 * a TCP proxy in front of MinIO that can be taken down and brought back on the
 * same port, and small /proc helpers to find and stop the processes a
 * `pulumi` CLI started.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { freePort, stopChild, tempDir, waitFor } from "../fixtures/net";
import { hostPublicKeyLine, runRemote, writeSshdConfig, type SshdHandle } from "../fixtures/sshd";

// ---- /proc -----------------------------------------------------------------

export function cmdline(pid: number): string[] {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((s) => s !== "");
  } catch {
    return [];
  }
}

export function ppid(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // pid (comm) state ppid ...; comm may contain spaces/parens: split after the last ')'.
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return undefined;
  }
}

export function allPids(): number[] {
  return fs
    .readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .map(Number);
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie still answers kill(0); treat it as gone.
    return !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** Every descendant of `root` (children, grandchildren, ...), by walking ppids. */
export function descendants(root: number): number[] {
  const byParent = new Map<number, number[]>();
  for (const p of allPids()) {
    const pp = ppid(p);
    if (pp === undefined) continue;
    byParent.set(pp, [...(byParent.get(pp) ?? []), p]);
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length) {
    for (const c of byParent.get(queue.shift()!) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/** The `pulumi <verb>` CLI process running in `projectDir` (the one PulumiStack spawned). */
export function findPulumiCli(projectDir: string, verb: string): number | undefined {
  for (const p of allPids()) {
    const argv = cmdline(p);
    if (argv.length < 2) continue;
    if (path.basename(argv[0]) !== "pulumi") continue;
    if (argv[1] !== verb) continue;
    if (!argv.includes(projectDir)) continue;
    return p;
  }
  return undefined;
}

/** SIGKILLs the given pids that are still alive (they were started by our own pulumi run). */
export function killAll(pids: number[]): number[] {
  const killed: number[] = [];
  for (const p of pids) {
    if (!alive(p)) continue;
    try {
      process.kill(p, "SIGKILL");
      killed.push(p);
    } catch {
      /* gone */
    }
  }
  return killed;
}

// ---- an sshd that can be cut and restarted on the same port -----------------

export interface RestartableSshd extends SshdHandle {
  /** Starts the listener (again) on the same port with the same keys. */
  start(): Promise<void>;
  /** Stops the listener and SIGKILLs every per-connection sshd process: live sessions are cut. */
  cut(): Promise<void>;
  /** Per-connection sshd processes currently serving sessions. */
  sessions(): number[];
}

/**
 * Debian's sshd on a fixed port, using a copy of `keysFrom`'s host key and
 * authorized client key (so the stack's `sshPrivateKey` secret stays valid
 * across restarts). Killing the listener alone does not end live sessions
 * (each connection is served by a forked child), so `cut()` kills those too.
 */
export async function startRestartableSshd(keysFrom: SshdHandle): Promise<RestartableSshd> {
  const dir = tempDir("faults-sshd");
  for (const f of ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "client_ed25519", "authorized_keys"]) {
    fs.copyFileSync(path.join(keysFrom.dir, f), path.join(dir, f));
    fs.chmodSync(path.join(dir, f), 0o600);
  }
  fs.mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const port = await freePort();
  const config = writeSshdConfig(dir, port);
  let child: ChildProcess | undefined;
  let log = "";
  const handle: RestartableSshd = {
    host: "127.0.0.1",
    port,
    user: "root",
    privateKeyPath: path.join(dir, "client_ed25519"),
    privateKey: fs.readFileSync(path.join(dir, "client_ed25519"), "utf8"),
    hostPublicKey: hostPublicKeyLine(dir, port),
    dir,
    pid: 0,
    async start() {
      if (child && child.exitCode === null && child.signalCode === null) return;
      const c = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", config], { stdio: ["ignore", "ignore", "pipe"] });
      c.stderr!.on("data", (d) => (log += d));
      child = c;
      handle.pid = c.pid!;
      await waitFor(
        `sshd on 127.0.0.1:${port}`,
        async () => {
          if (c.exitCode !== null) throw new Error(`sshd exited ${c.exitCode}: ${log}`);
          return (await runRemote(handle, "true", { timeoutMs: 5000 })).code === 0;
        },
        15_000,
        100,
      );
    },
    sessions() {
      return handle.pid ? descendants(handle.pid).filter((p) => (cmdline(p)[0] ?? "").startsWith("sshd")) : [];
    },
    async cut() {
      const sessions = handle.sessions();
      await stopChild(child);
      killAll(sessions);
      await waitFor("cut ssh sessions to exit", async () => sessions.every((p) => !alive(p)), 10_000, 50);
    },
    async stop() {
      const sessions = handle.sessions();
      await stopChild(child);
      killAll(sessions);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  await handle.start();
  return handle;
}

// ---- a TCP proxy in front of S3 that can go down ----------------------------

export interface SwitchableProxy {
  port: number;
  url: string;
  /** Closes the listener (connections are refused) and resets open connections. */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  isUp(): boolean;
  stop(): Promise<void>;
}

export async function startProxy(targetPort: number): Promise<SwitchableProxy> {
  const port = await freePort();
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = net.createServer((client) => {
        const upstream = net.connect(targetPort, "127.0.0.1");
        sockets.add(client);
        sockets.add(upstream);
        const drop = () => {
          client.destroy();
          upstream.destroy();
          sockets.delete(client);
          sockets.delete(upstream);
        };
        client.on("error", drop).on("close", drop);
        upstream.on("error", drop).on("close", drop);
        client.pipe(upstream);
        upstream.pipe(client);
      });
      s.once("error", reject);
      s.listen(port, "127.0.0.1", () => {
        server = s;
        resolve();
      });
    });
  const close = async () => {
    const s = server;
    server = undefined;
    for (const sock of sockets) sock.destroy();
    sockets.clear();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  };
  await listen();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    down: close,
    async up() {
      if (!server) await listen();
    },
    isUp: () => server !== undefined,
    stop: close,
  };
}
