// The DataSnapshot's logic: read /admin/stats and a sample of threads with
// their messages from the OLD version before anything is stopped. Never
// fails: a down service, missing or refused keys give
// {available:false, reason}, and the continuity gate is then skipped.
//
// Serialized INTO the DataSnapshot provider closure (rules in ./index.ts).

import { missingKeys, readSample, readStats, type DataSample, type Dialect, type ReadContext } from "./continuity";
import { apiCall, field, scrubSecrets, secretsFor, type ApiContext } from "./http";

/** What `takeSnapshot` needs. Times are milliseconds. */
export interface SnapshotOptions {
  /** Base URL of the (old) instance. */
  url: string;
  /** Its API: "v1" (0.1.x) or "frontend-v1" (0.2.x). */
  dialect: Dialect;
  apiKey?: string;
  adminApiKey?: string;
  headers?: Record<string, string>;
  caCertPem?: string;
  requestTimeoutMs: number;
  /** Threads to sample. Defaults to 20. */
  sampleSize?: number;
  /** false: record {available:false} without a request. Defaults to true. */
  enabled?: boolean;
  /** Budget of the whole reading. Defaults to 60000. */
  timeoutMs?: number;
}

export interface SnapshotDeps {
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
  /** Salt of the digests (tests); defaults to 16 random bytes, hex. */
  salt?: string;
}

function randomSalt(): string {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Reads the sample. Never throws. */
export async function takeSnapshot(opts: SnapshotOptions, deps: SnapshotDeps = {}): Promise<DataSample> {
  const now = deps.now ?? (() => Date.now());
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const random = deps.random ?? Math.random;
  const salt = deps.salt ?? randomSalt();
  const empty = (reason: string, servedVersion = ""): DataSample => ({
    available: false,
    reason,
    dialect: opts.dialect,
    servedVersion,
    takenAt: new Date(now()).toISOString(),
    salt,
    stats: { threads: 0, messages: 0 },
    threadsListed: 0,
    threads: [],
  });
  if (opts.enabled === false) return empty("the snapshot is disabled (enabled: false)");
  let base: URL;
  try {
    base = new URL(opts.url);
  } catch {
    return empty(`url is not a URL: ${JSON.stringify(opts.url)}`);
  }
  const secrets = secretsFor(base, [opts.apiKey, opts.adminApiKey], opts.headers);
  const scrub = (s: string): string => scrubSecrets(s, secrets);
  try {
    const lacking = missingKeys(opts.dialect, opts.apiKey, opts.adminApiKey);
    if (lacking) return empty(lacking);
    const ctx: ApiContext = {
      base,
      headers: opts.headers,
      requestTimeoutMs: opts.requestTimeoutMs,
      caCertPem: opts.caCertPem,
      deadline: now() + (opts.timeoutMs ?? 60000),
      now,
      sleep,
      random,
    };
    // Is it up, and which family answers? (/readyz: 0.2.x 200 with its version; 0.1.x 401.)
    const h = await apiCall(ctx, "GET", "/healthz", { okStatuses: [200] });
    if (!h.ok) return empty(scrub(`the service did not answer: ${h.obs.seen} (${h.obs.cause})`));
    const r = await apiCall(ctx, "GET", "/readyz", { okStatuses: [200] });
    const reported = r.ok ? field(r.json, "version") : undefined;
    const servedVersion = typeof reported === "string" ? reported : "";
    if (opts.dialect === "v1" && r.ok) {
      return empty(`dialect is "v1" (0.1.x) but /readyz answered 200${servedVersion ? ` with ${servedVersion}` : ""}: a 0.2-family process is running; use dialect "frontend-v1"`, servedVersion);
    }
    if (opts.dialect === "frontend-v1" && !r.ok && (r.res?.status === 401 || r.res?.status === 404)) {
      return empty(`dialect is "frontend-v1" (0.2.x) but there is no /readyz (${r.res.status}): a 0.1.x process is running; use dialect "v1"`);
    }

    const rc: ReadContext = { ctx, dialect: opts.dialect, apiKey: opts.apiKey, adminApiKey: opts.adminApiKey };
    const stats = await readStats(rc);
    if ("failed" in stats) return empty(scrub(stats.text), servedVersion);
    const sample = await readSample(rc, salt, opts.sampleSize ?? 20);
    if ("failed" in sample) return empty(scrub(sample.text), servedVersion);
    return {
      available: true,
      reason: "",
      dialect: opts.dialect,
      servedVersion,
      takenAt: new Date(now()).toISOString(),
      salt,
      stats,
      threadsListed: sample.threadsListed,
      threads: sample.threads,
    };
  } catch (e) {
    return empty(scrub(`the reading failed: ${e instanceof Error ? e.message : String(e)}`));
  }
}

// ---------------------------------------------------------------- provider helpers (pure)

export type SnapshotInputs = Record<string, unknown>;

/** Input keys kept in the state (never the keys). */
export function snapshotInputKeys(): string[] {
  return ["url", "dialect", "version", "headers", "caCertPem", "requestTimeoutSeconds", "sampleSize", "enabled", "providerVersion"];
}

function isUnknown(v: unknown): boolean {
  return v === "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
}

/** Inputs → SnapshotOptions (defaults applied). */
export function snapshotOptionsFromInputs(inputs: SnapshotInputs): SnapshotOptions {
  const headers: Record<string, string> = {};
  const h = inputs["headers"];
  if (h && typeof h === "object") for (const [k, v] of Object.entries(h as Record<string, unknown>)) headers[k] = String(v);
  const str = (k: string): string | undefined => {
    const v = inputs[k];
    return typeof v === "string" && v !== "" ? v : undefined;
  };
  const rt = inputs["requestTimeoutSeconds"];
  const ss = inputs["sampleSize"];
  return {
    url: String(inputs["url"]),
    dialect: inputs["dialect"] === "v1" ? "v1" : "frontend-v1",
    apiKey: str("apiKey"),
    adminApiKey: str("adminApiKey"),
    headers,
    caCertPem: str("caCertPem"),
    requestTimeoutMs: Math.round((typeof rt === "number" && Number.isFinite(rt) ? rt : 5) * 1000),
    sampleSize: typeof ss === "number" && Number.isFinite(ss) ? Math.floor(ss) : 20,
    enabled: inputs["enabled"] !== false,
  };
}

/** `check`: one failure per bad field. Unknown (preview) values are skipped. */
export function validateSnapshotInputs(news: SnapshotInputs): { property: string; reason: string }[] {
  const failures: { property: string; reason: string }[] = [];
  const url = news["url"];
  if (!isUnknown(url)) {
    let ok: boolean;
    try {
      const u = typeof url === "string" ? new URL(url) : undefined;
      ok = u !== undefined && (u.protocol === "http:" || u.protocol === "https:");
    } catch {
      ok = false;
    }
    if (!ok) failures.push({ property: "url", reason: `url must be an http:// or https:// base URL such as http://10.0.0.5:8080 (got ${JSON.stringify(url ?? null)})` });
  }
  const d = news["dialect"];
  if (!isUnknown(d) && d !== "v1" && d !== "frontend-v1") {
    failures.push({ property: "dialect", reason: `dialect must be "v1" (0.1.x) or "frontend-v1" (0.2.x) (got ${JSON.stringify(d ?? null)})` });
  }
  const v = news["version"];
  if (!isUnknown(v) && (typeof v !== "string" || v.trim() === "")) {
    failures.push({ property: "version", reason: "version must be a non-empty version (a new snapshot is taken whenever it changes)" });
  }
  const ss = news["sampleSize"];
  if (ss !== undefined && !isUnknown(ss) && (typeof ss !== "number" || !Number.isInteger(ss) || ss < 1 || ss > 1000)) {
    failures.push({ property: "sampleSize", reason: `sampleSize must be a whole number of threads from 1 to 1000 (got ${JSON.stringify(ss)})` });
  }
  const rt = news["requestTimeoutSeconds"];
  if (rt !== undefined && !isUnknown(rt) && (typeof rt !== "number" || !Number.isFinite(rt) || rt <= 0)) {
    failures.push({ property: "requestTimeoutSeconds", reason: `requestTimeoutSeconds must be a number of seconds greater than 0 (got ${JSON.stringify(rt)})` });
  }
  const ca = news["caCertPem"];
  if (ca !== undefined && ca !== "" && !isUnknown(ca) && (typeof ca !== "string" || !ca.includes("-----BEGIN CERTIFICATE-----"))) {
    failures.push({ property: "caCertPem", reason: "caCertPem must be a PEM certificate (-----BEGIN CERTIFICATE----- …)" });
  }
  return failures;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/**
 * `diff`: only a new `version` replaces (a new reading, from the version still
 * running before that upgrade). Any other change is an update that keeps the
 * sample: re-reading then could read the NEW version as if it were the old.
 */
export function diffSnapshotInputs(olds: SnapshotInputs, news: SnapshotInputs): { changes: boolean; replaces: string[]; deleteBeforeReplace: boolean } {
  const replaces = same(olds["version"], news["version"]) ? [] : ["version"];
  const updated = snapshotInputKeys().some((k) => k !== "version" && !same(olds[k], news[k]));
  return { changes: replaces.length > 0 || updated, replaces, deleteBeforeReplace: false };
}

/** The state after create: inputs (never the keys) + the sample + its summary. */
export function snapshotOutputs(inputs: SnapshotInputs, sample: DataSample): Record<string, unknown> {
  const outs: Record<string, unknown> = {};
  for (const k of snapshotInputKeys()) if (inputs[k] !== undefined && inputs[k] !== null) outs[k] = inputs[k];
  outs["sample"] = sample;
  outs["available"] = sample.available;
  outs["reason"] = sample.reason;
  outs["takenAt"] = sample.takenAt;
  return outs;
}
