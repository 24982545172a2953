// A client polling GET <url>/healthz every `intervalMs`, in a process of its own
// (so the benchmark's own work never delays a probe). A probe that fails
// (refused, reset, timeout after 1 s, not 2xx) starts a down window; the next
// success ends it. stop() returns the windows.
import { spawn } from "node:child_process";

const CHILD = `
const [url, interval] = [process.argv[1], Number(process.argv[2])];
const windows = []; let downSince; let probes = 0; let stopped = false;
process.stdin.on("data", () => {}); process.stdin.on("end", () => { stopped = true; });
(async () => {
  while (!stopped) {
    const t = Date.now();
    const ok = await fetch(url + "/healthz", { signal: AbortSignal.timeout(1000) }).then(async (r) => { await r.arrayBuffer(); return r.ok; }, () => false);
    probes++;
    const now = Date.now();
    if (!ok && downSince === undefined) downSince = t;
    if (ok && downSince !== undefined) { windows.push([downSince, now]); downSince = undefined; }
    await new Promise((r) => setTimeout(r, Math.max(0, interval - (Date.now() - t))));
  }
  if (downSince !== undefined) windows.push([downSince, Date.now()]);
  process.stdout.write(JSON.stringify({ windows, probes }));
})();
`;

export interface ProbeResult {
  /** [start, end] epoch ms of each run of failed probes (end: the first success after it). */
  windows: Array<[number, number]>;
  probes: number;
  /** The longest window, in ms (0 when every probe succeeded). */
  longestMs: number;
  /** All windows together, in ms. */
  totalMs: number;
}

export interface Prober {
  stop(): Promise<ProbeResult>;
}

export async function startProber(url: string, intervalMs = 20): Promise<Prober> {
  const child = spawn(process.execPath, ["-e", CHILD, url, String(intervalMs)], { stdio: ["pipe", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", () => resolve());
  });
  // Let it take its first probe before the measured action starts.
  await new Promise((r) => setTimeout(r, 200));
  return {
    async stop() {
      child.stdin.end();
      await exited;
      const r = JSON.parse(out) as { windows: Array<[number, number]>; probes: number };
      const lengths = r.windows.map(([a, b]) => b - a);
      return { ...r, longestMs: Math.max(0, ...lengths), totalMs: lengths.reduce((a, b) => a + b, 0) };
    },
  };
}
