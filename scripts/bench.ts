// `npm run bench [-- --sizes 10,200,1000,2000] [--previews 5] [--out bench/results.json]`
//
// Measures, with the real engine on the local stack (sshd, MinIO and a release
// mirror on 127.0.0.1, the stand-in's releases 0.2.0 and 0.2.1), what an
// upgrade costs compared with what it must cost, and prints ONE table, then one
// line per goal (`goal <name>: <measured> (target <target>) ok|MISSED`);
// bench/results.json gets every figure.
//
// Per data size (a fresh local stack each, deployed at 0.2.0, then filled with
// Pebble-like data, bench/data.ts):
// - bare restart: stop + start of the running release on the host, until
//   /healthz answers (median of 3; bench/host.ts);
// - upgrade downtime: a client polling /healthz every 20 ms (bench/prober.ts)
//   during a real `pulumi up` 0.2.0 → 0.2.1: the longest run of failed probes;
// - program backup: the wall time of every host step of the program's backup
//   components (resources under a `progressdb:backup:*` component: the backup
//   itself and, when the program has one, its offsite upload), from the engine's
//   event stream as it arrives (`pulumi up --json`, bench/events.ts), whether the
//   service runs or not, SSH connections included, minus the time those steps
//   said they were waiting for another step (their "waiting" lines in the host's
//   upgrade.log, bench/hostLog.ts); MB/s = the data dir's bytes / that time.
//   (A cold delta the install step copies while the service is stopped is not in
//   it: that is in the downtime.)
// - raw: `tar | gzip | aws s3 cp -` of the same data dir to the same MinIO
//   bucket, timed on the host, in the same run, just before the upgrade.
// Previews (in the first size's stack, interleaved, medians): an empty
// TypeScript program and one with a single trivial dynamic resource (the floor
// of any program with one; bench/preview.ts), the unchanged stack, and the stack
// with a config error (progressdb:version "latest", refused by components/config.ts).
import { mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { seedData } from "../bench/data";
import { upWithSteps, type StepTime } from "../bench/events";
import { bareRestart, rawBackup } from "../bench/host";
import { tailLog, waitingMs } from "../bench/hostLog";
import { median, referenceProgram, timedPreview, type ReferenceProgram } from "../bench/preview";
import { startProber } from "../bench/prober";
import { REPO } from "./lib/pulumiCli";
import { startEngineWorld, type EngineWorld } from "../tests/e2e/engineWorld";

const FROM = "0.2.0";
const TO = "0.2.1";
const STACK = "bench";
/** The smallest data size (MB) at which the backup's throughput, rather than its fixed costs, is measured. */
const BULK_MB = 200;

interface Args {
  sizes: number[];
  previews: number;
  out: string;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { sizes: [10, 200, 1000, 2000], previews: 5, out: path.join(REPO, "bench", "results.json") };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split("=", 2);
    const value = () => inline ?? argv[++i];
    if (flag === "--sizes") args.sizes = value().split(",").map((s) => Number(s.trim()));
    else if (flag === "--previews") args.previews = Number(value());
    else if (flag === "--out") args.out = path.resolve(value());
    else throw new Error(`unknown argument ${argv[i]} (use --sizes 10,200 --previews 5 --out FILE)`);
  }
  if (!args.sizes.length || args.sizes.some((s) => !(s > 0))) throw new Error("--sizes: positive MB values, e.g. 10,200");
  if (!(args.previews >= 1)) throw new Error("--previews: at least 1");
  return args;
}

interface SizeResult {
  sizeMb: number;
  bytes: number;
  files: number;
  restartMs: number[];
  restartMedianMs: number;
  downtimeMs: number;
  downWindowsMs: number[];
  upMs: number;
  upExit: number;
  backupMs: number;
  backupSteps: Array<{ resource: string; op: string; ms: number }>;
  /** Time the backup steps spent waiting for other steps (their own "waiting" log lines), not counted. */
  backupWaitMs: number;
  backupMBps: number;
  rawMs: number;
  rawMBps: number;
}

interface PreviewResult {
  emptyMs: number[];
  /** A program with one trivial dynamic resource: the floor of any program with one. */
  oneDynamicMs: number[];
  unchangedMs: number[];
  configErrorMs: number[];
  configErrorExit: number;
  configErrorShown: boolean;
}

/** The world of the size being measured (stopped on SIGINT/SIGTERM). */
let current: EngineWorld | undefined;

const log = (text: string) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${text}`);

function dirBytes(dir: string): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    const st = statSync(p, { throwIfNoEntry: false });
    if (!st) continue;
    if (st.isDirectory()) {
      const sub = dirBytes(p);
      bytes += sub.bytes;
      files += sub.files;
    } else if (st.isFile()) {
      bytes += st.size;
      files++;
    }
  }
  return { bytes, files };
}

/** The steps of the program's backup: custom resources under a progressdb:backup:* component. */
function backupSteps(steps: StepTime[]): Array<{ resource: string; op: string; ms: number }> {
  return steps
    .filter((s) => {
      const types = s.urn.split("::")[2]?.split("$") ?? [];
      return types.slice(0, -1).some((t) => t.startsWith("progressdb:backup:")) && !types[types.length - 1].startsWith("progressdb:");
    })
    .map((s) => ({ resource: s.urn.split("::").pop() ?? s.urn, op: s.op, ms: s.endMs - s.startMs }));
}

async function measurePreviews(w: EngineWorld, refs: { empty: ReferenceProgram; oneDynamic: ReferenceProgram }, n: number): Promise<PreviewResult> {
  const r: PreviewResult = { emptyMs: [], oneDynamicMs: [], unchangedMs: [], configErrorMs: [], configErrorExit: 0, configErrorShown: false };
  // One of each first, unmeasured: the caches and the page cache are warm for all of them.
  await refs.empty.preview();
  await refs.oneDynamic.preview();
  await timedPreview(w.stack);
  for (let i = 0; i < n; i++) {
    r.emptyMs.push(await refs.empty.preview());
    r.oneDynamicMs.push(await refs.oneDynamic.preview());
    const valid = await timedPreview(w.stack);
    if (valid.code !== 0) throw new Error(`preview of the unchanged stack failed:\n${valid.output.slice(-3000)}`);
    if (!/\b\d+ unchanged\b/.test(valid.output) || /\bto (create|update|replace|delete)\b/.test(valid.output)) log(`note: the "unchanged" preview shows changes:\n${valid.output.slice(-1500)}`);
    r.unchangedMs.push(valid.ms);
    w.stack.setVersionLine("latest");
    try {
      const bad = await timedPreview(w.stack);
      r.configErrorMs.push(bad.ms);
      r.configErrorExit = bad.code;
      r.configErrorShown = bad.code !== 0 && bad.output.includes("latest");
      if (!r.configErrorShown) throw new Error(`the config error was not reported:\n${bad.output.slice(-3000)}`);
    } finally {
      w.stack.setVersionLine(FROM);
    }
  }
  return r;
}

async function measureSize(sizeMb: number, args: Args, previews: { todo: boolean; result?: PreviewResult }): Promise<SizeResult> {
  log(`${sizeMb} MB: starting sshd, MinIO and the release mirror (${FROM}, ${TO})`);
  const w = await startEngineWorld({ versions: [FROM, TO], stackName: STACK });
  current = w;
  const refs: ReferenceProgram[] = [];
  try {
    w.stack.setVersionLine(FROM);
    log(`${sizeMb} MB: pulumi up (deploy ${FROM})`);
    await w.stack.up();
    if (previews.todo) {
      log(`previews: empty program, one dynamic resource, unchanged stack, config error (${args.previews} each, interleaved)`);
      const empty = await referenceProgram("empty");
      refs.push(empty);
      const oneDynamic = await referenceProgram("one-dynamic-resource");
      refs.push(oneDynamic);
      previews.result = await measurePreviews(w, { empty, oneDynamic }, args.previews);
      previews.todo = false;
    }
    log(`${sizeMb} MB: writing the data`);
    seedData(w.dbPath, sizeMb);
    const { bytes, files } = dirBytes(w.dbPath);
    const mb = bytes / 1e6;

    log(`${sizeMb} MB: raw tar | gzip | aws s3 cp -`);
    const rawMs = await rawBackup(w.sshd, w.minio, w.dbPath, `bench-raw/${sizeMb}mb-${Date.now()}.tar.gz`);

    log(`${sizeMb} MB: bare restarts`);
    const restartMs: number[] = [];
    for (let i = 0; i < 3; i++) restartMs.push(await bareRestart(w.sshd, w.installDir, "progressdb", w.url));

    log(`${sizeMb} MB: pulumi up (${FROM} → ${TO}) with the prober`);
    w.stack.setVersionLine(TO);
    const hostLog = tailLog(path.join(w.installDir, "logs", "upgrade.log"));
    const prober = await startProber(w.url, 20);
    const up = await upWithSteps(w.stack, STACK);
    const probe = await prober.stop();
    const steps = backupSteps(up.steps);
    const backupWaitMs = waitingMs(hostLog.stop(), /backup|offsite|snapshot/);
    if (up.code !== 0) log(`${sizeMb} MB: the upgrade FAILED (exit ${up.code}):\n${up.errors.join("\n").slice(-3000)}`);
    const out = up.code === 0 ? await w.stack.outputs() : undefined;
    if (out && out.version !== TO) log(`${sizeMb} MB: the stack reports version ${out.version} after the upgrade`);
    const backupMs = steps.reduce((a, s) => a + s.ms, 0) - backupWaitMs;
    return {
      sizeMb,
      bytes,
      files,
      restartMs,
      restartMedianMs: median(restartMs),
      downtimeMs: probe.longestMs,
      downWindowsMs: probe.windows.map(([a, b]) => b - a),
      upMs: up.ms,
      upExit: up.code,
      backupMs,
      backupSteps: steps,
      backupWaitMs,
      backupMBps: backupMs > 0 ? mb / (backupMs / 1000) : NaN,
      rawMs,
      rawMBps: mb / (rawMs / 1000),
    };
  } finally {
    for (const ref of refs) ref.remove();
    current = undefined;
    await w.stop();
  }
}

const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const mbs = (x: number) => (Number.isFinite(x) ? `${x.toFixed(1)} MB/s` : "n/a");

interface Goal {
  name: string;
  measured: string;
  target: string;
  ok: boolean;
}

function goals(sizes: SizeResult[], p: PreviewResult): Goal[] {
  const out: Goal[] = [];
  // Downtime: the size whose downtime is furthest over its own target.
  const dt = sizes.map((r) => ({ r, target: 1.5 * r.restartMedianMs + 1000 })).sort((a, b) => b.r.downtimeMs / b.target - a.r.downtimeMs / a.target)[0];
  out.push({
    name: "downtime",
    measured: `${s(dt.r.downtimeMs)} at ${dt.r.sizeMb} MB (worst of ${sizes.length} sizes)`,
    target: `≤ 1.5 × ${s(dt.r.restartMedianMs)} bare restart + 1 s = ${s(dt.target)} at every size`,
    ok: sizes.every((r) => r.upExit === 0 && r.downtimeMs <= 1.5 * r.restartMedianMs + 1000),
  });
  // Throughput is a rate: it is judged where the data, not the fixed costs, takes the time. Below
  // BULK_MB the backup's fixed costs (two SSH sessions, the warm copy, the verification's second
  // `aws` start, ~0.6 s each) outweigh the data, and raw verifies nothing: those sizes are reported
  // beside the goal, not hidden. A run with no bulk size (the test's 10 MB) judges what it has.
  const bulk = sizes.filter((r) => r.sizeMb >= BULK_MB);
  const judged = bulk.length ? bulk : sizes;
  const ratioOf = (r: SizeResult) => r.backupMBps / r.rawMBps;
  const bt = [...judged].sort((a, b) => ratioOf(a) - ratioOf(b))[0];
  const small = sizes.filter((r) => !judged.includes(r)).map((r) => `${r.sizeMb} MB: ${s(r.backupMs)} against raw ${s(r.rawMs)}, ${ratioOf(r).toFixed(2)} ×`);
  out.push({
    name: "backup throughput",
    measured:
      `${mbs(bt.backupMBps)} = ${Number.isFinite(ratioOf(bt)) ? ratioOf(bt).toFixed(2) : "n/a"} × raw ${mbs(bt.rawMBps)} at ${bt.sizeMb} MB (worst of ${judged.length} size${judged.length > 1 ? "s" : ""})` +
      (small.length ? `; fixed costs dominate below ${BULK_MB} MB (${small.join("; ")})` : ""),
    target: bulk.length ? `≥ 0.9 × raw at every size from ${BULK_MB} MB` : "≥ 0.9 × raw",
    ok: judged.every((r) => r.backupMBps >= 0.9 * r.rawMBps),
  });
  const [e, d, u, c] = [median(p.emptyMs), median(p.oneDynamicMs), median(p.unchangedMs), median(p.configErrorMs)];
  out.push({
    name: "unchanged preview",
    measured: `${s(u)} = ${(u / e).toFixed(2)} × empty ${s(e)} (a program with one trivial dynamic resource: ${s(d)} = ${(d / e).toFixed(2)} ×)`,
    target: "≤ 1.5 × empty preview",
    ok: u <= 1.5 * e,
  });
  out.push({ name: "config-error preview", measured: `${s(c)} = ${(c / u).toFixed(2)} × valid ${s(u)}`, target: "≤ valid preview", ok: c <= u });
  return out;
}

/** Each backup resource's step time (its create/replace/delete ops together). */
function stepSummary(steps: SizeResult["backupSteps"]): string {
  const by = new Map<string, number>();
  for (const b of steps) by.set(b.resource, (by.get(b.resource) ?? 0) + b.ms);
  return [...by].map(([name, ms]) => `${name} ${s(ms)}`).join(" + ") || "no backup step seen";
}

function table(sizes: SizeResult[], p: PreviewResult): string {
  const rows: string[][] = [["measurement", "size", "value", "detail"]];
  for (const r of sizes) {
    const size = `${r.sizeMb} MB`;
    rows.push(
      ["data", size, `${(r.bytes / 1e6).toFixed(1)} MB`, `${r.files} files (sst/log, mixed compressibility)`],
      ["bare restart", size, s(r.restartMedianMs), `median of ${r.restartMs.map((x) => (x / 1000).toFixed(2)).join(", ")} s: stop + start until /healthz, on the host`],
      ["upgrade downtime", size, s(r.downtimeMs), `longest /healthz failure (20 ms probes) in \`pulumi up\` ${FROM} → ${TO}: ${s(r.upMs)}, exit ${r.upExit}`],
      ["downtime / restart", size, (r.downtimeMs / r.restartMedianMs).toFixed(1), `target ≤ 1.5 × restart + 1 s = ${s(1.5 * r.restartMedianMs + 1000)}`],
      ["program backup", size, mbs(r.backupMBps), `${s(r.backupMs)} = ${stepSummary(r.backupSteps)}${r.backupWaitMs ? ` − ${s(r.backupWaitMs)} waiting for the install` : ""}`],
      ["raw tar|gzip|aws s3 cp -", size, mbs(r.rawMBps), `${s(r.rawMs)}, same data dir and MinIO bucket`],
      ["backup / raw", size, (r.backupMBps / r.rawMBps).toFixed(2), "target ≥ 0.9"],
    );
  }
  const spread = (xs: number[]) => `median of ${xs.length}: ${xs.map((x) => (x / 1000).toFixed(2)).join(", ")} s`;
  rows.push(
    ["preview: empty program", "-", s(median(p.emptyMs)), spread(p.emptyMs)],
    ["preview: one dynamic resource", "-", s(median(p.oneDynamicMs)), `${spread(p.oneDynamicMs)}; a trivial provider, nothing else`],
    ["preview: unchanged stack", "-", s(median(p.unchangedMs)), spread(p.unchangedMs)],
    ["preview: config error", "-", s(median(p.configErrorMs)), `${spread(p.configErrorMs)}; exit ${p.configErrorExit}`],
  );
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]) => `| ${r.map((c, i) => (i === 3 ? c : c.padEnd(widths[i]))).join(" | ")} |`.replace(/ \|$/, " |");
  return [line(rows[0]), `|${widths.map((w, i) => "-".repeat(i === 3 ? 8 : w + 2)).join("|")}|`, ...rows.slice(1).map(line)].join("\n");
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const previews: { todo: boolean; result?: PreviewResult } = { todo: true };
  const sizes: SizeResult[] = [];
  for (const size of args.sizes) sizes.push(await measureSize(size, args, previews));
  const p = previews.result!;
  const g = goals(sizes, p);
  const runSeconds = (Date.now() - started) / 1000;
  console.log(table(sizes, p));
  console.log("");
  for (const x of g) console.log(`goal ${x.name}: ${x.measured} (target ${x.target}) ${x.ok ? "ok" : "MISSED"}`);
  mkdirSync(path.dirname(args.out), { recursive: true });
  writeFileSync(
    args.out,
    JSON.stringify(
      {
        startedAt: new Date(started).toISOString(),
        runSeconds,
        machine: { cpus: os.cpus().length, loadavgAtEnd: os.loadavg(), node: process.version },
        upgrade: `${FROM} → ${TO} (stand-in releases, process mode, local stack)`,
        sizes,
        previews: { ...p, emptyMedianMs: median(p.emptyMs), oneDynamicMedianMs: median(p.oneDynamicMs), unchangedMedianMs: median(p.unchangedMs), configErrorMedianMs: median(p.configErrorMs) },
        goals: g,
      },
      null,
      2,
    ) + "\n",
  );
  log(`done in ${runSeconds.toFixed(0)} s; wrote ${path.relative(process.cwd(), args.out) || args.out}`);
}

// Interrupted: stop the servers of the running size, then exit.
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping the servers`);
    void Promise.resolve(current?.stop()).finally(() => process.exit(130));
  });
}

main().catch((e: unknown) => {
  console.error(`bench failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  process.exit(1);
});
