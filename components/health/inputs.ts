// The HealthCheck provider's pure parts: inputs → options, outputs, `check`
// and `diff` rules.
//
// Serialized INTO the HealthCheck provider closure (rules in ./index.ts).

import { canonicalJson, type DataSample, type SampleThread } from "./continuity";
import { displayUrl } from "./http";
import type { HealthOutcome, PollOptions, PollResult } from "./poll";

/** Provider inputs as they reach the dynamic provider (secrets already unwrapped). */
export type HealthInputs = Record<string, unknown>;

/**
 * The input keys kept in the outputs (so `read` can re-check and return them
 * as inputs). Never the API keys. The mode of the version proof travels as
 * `versionProofMode`: the output `versionProof` is the proof itself.
 */
export function inputKeys(): string[] {
  return [
    "url",
    "expectedVersion",
    "deploymentId",
    "timeoutSeconds",
    "intervalSeconds",
    "requestTimeoutSeconds",
    "headers",
    "caCertPem",
    "smokeTest",
    "versionProofMode",
    "hostProof",
    "dialect",
    "baseline",
    "baselineVersion",
    "dataContinuity",
    "bakeSeconds",
    "fleetNote",
    "providerVersion",
  ];
}

function isUnknown(v: unknown): boolean {
  // The engine's placeholder for values not known during preview.
  return v === "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
}

function num(v: unknown, dflt: number): number {
  return typeof v === "number" && Number.isFinite(v) ? v : dflt;
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

/** A baseline as it comes back from the state (optional fields may be gone) → DataSample, or undefined. */
export function normalizeSample(x: unknown): DataSample | undefined {
  if (x === null || typeof x !== "object" || Array.isArray(x)) return undefined;
  const o = x as Record<string, unknown>;
  const threads: SampleThread[] = [];
  for (const t of Array.isArray(o["threads"]) ? (o["threads"] as unknown[]) : []) {
    if (t === null || typeof t !== "object") continue;
    const r = t as Record<string, unknown>;
    threads.push({
      ref: String(r["ref"] ?? `#${threads.length + 1}`),
      authorDigest: String(r["authorDigest"] ?? ""),
      matchDigest: String(r["matchDigest"] ?? ""),
      digest: String(r["digest"] ?? ""),
      messageCount: num(r["messageCount"], 0),
      messageDigests: Array.isArray(r["messageDigests"]) ? (r["messageDigests"] as unknown[]).map((d) => String(d)) : [],
      ...(r["messagesTruncated"] === true ? { messagesTruncated: true } : {}),
    });
  }
  const st = o["stats"];
  const stats =
    st !== null && typeof st === "object" && typeof (st as Record<string, unknown>)["threads"] === "number"
      ? { threads: num((st as Record<string, unknown>)["threads"], 0), messages: num((st as Record<string, unknown>)["messages"], 0) }
      : { threads: 0, messages: 0 };
  return {
    available: o["available"] === true,
    reason: typeof o["reason"] === "string" ? o["reason"] : "",
    dialect: o["dialect"] === "v1" ? "v1" : "frontend-v1",
    servedVersion: typeof o["servedVersion"] === "string" ? o["servedVersion"] : "",
    takenAt: typeof o["takenAt"] === "string" ? o["takenAt"] : "",
    salt: typeof o["salt"] === "string" ? o["salt"] : "",
    stats,
    threadsListed: num(o["threadsListed"], threads.length),
    threads,
  };
}

/** Inputs (seconds, defaults) → PollOptions (milliseconds). */
export function optionsFromInputs(inputs: HealthInputs): PollOptions {
  const headers: Record<string, string> = {};
  const h = inputs["headers"];
  if (h && typeof h === "object") {
    for (const [k, v] of Object.entries(h as Record<string, unknown>)) headers[k] = String(v);
  }
  const dc = inputs["dataContinuity"];
  return {
    url: String(inputs["url"]),
    expectedVersion: String(inputs["expectedVersion"]),
    timeoutMs: Math.round(num(inputs["timeoutSeconds"], 120) * 1000),
    intervalMs: Math.round(num(inputs["intervalSeconds"], 2) * 1000),
    requestTimeoutMs: Math.round(num(inputs["requestTimeoutSeconds"], 5) * 1000),
    headers,
    caCertPem: str(inputs["caCertPem"]),
    versionProof: inputs["versionProofMode"] === "host" ? "host" : "readyz",
    hostProof: typeof inputs["hostProof"] === "string" ? inputs["hostProof"] : undefined,
    dialect: inputs["dialect"] === "v1" ? "v1" : "frontend-v1",
    smokeTest: inputs["smokeTest"] === true,
    apiKey: str(inputs["apiKey"]),
    adminApiKey: str(inputs["adminApiKey"]),
    baseline: normalizeSample(inputs["baseline"]),
    baselineVersion: str(inputs["baselineVersion"]),
    dataContinuity: typeof dc === "boolean" ? dc : undefined,
    bakeMs: Math.round(num(inputs["bakeSeconds"], 0) * 1000),
    fleetNote: str(inputs["fleetNote"]),
  };
}

/** The state written after a check: the inputs (never the API keys) plus the results. */
export function outputsFrom(inputs: HealthInputs, r: HealthOutcome | PollResult, runId: string): Record<string, unknown> {
  const outs: Record<string, unknown> = {};
  for (const k of inputKeys()) if (inputs[k] !== undefined && inputs[k] !== null) outs[k] = inputs[k];
  const ok = "ok" in r ? r.ok : true;
  outs["status"] = ok ? "healthy" : "unhealthy";
  outs["reportedVersion"] = r.reportedVersion;
  outs["versionProof"] = r.versionProof;
  outs["attempts"] = r.attempts;
  outs["elapsedMs"] = r.elapsedMs;
  outs["checkedAt"] = r.checkedAt;
  outs["smokeResult"] = r.smokeResult;
  outs["continuity"] = r.continuity;
  outs["continuityMessage"] = r.continuityMessage;
  outs["runId"] = runId;
  outs["message"] = "message" in r ? r.message : "";
  return outs;
}

/** `check`: one failure per bad field, naming it and the fix. Unknown (preview) values are skipped. */
export function validateInputs(news: HealthInputs): { property: string; reason: string }[] {
  const failures: { property: string; reason: string }[] = [];
  const url = news["url"];
  if (!isUnknown(url)) {
    let parsed: URL | undefined;
    try {
      parsed = typeof url === "string" ? new URL(url) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) {
      failures.push({ property: "url", reason: `url must be an http:// or https:// base URL such as http://10.0.0.5:8080 (got ${JSON.stringify(url ?? null)})` });
    } else if (/\/(healthz|readyz)\/?$/.test(parsed.pathname)) {
      failures.push({ property: "url", reason: `url must be the base URL without ${parsed.pathname.replace(/^.*(\/(healthz|readyz)).*$/, "$1")} (got ${displayUrl(parsed)})` });
    } else if (parsed.search || parsed.hash) {
      failures.push({ property: "url", reason: "url must not have a query string or fragment" });
    }
  }
  const ev = news["expectedVersion"];
  if (!isUnknown(ev) && (typeof ev !== "string" || ev.trim() === "")) {
    failures.push({ property: "expectedVersion", reason: "expectedVersion must be a non-empty version such as \"0.2.0\"" });
  }
  const dep = news["deploymentId"];
  if (!isUnknown(dep) && typeof dep !== "string") {
    failures.push({ property: "deploymentId", reason: "deploymentId must be a string (e.g. the install command's id)" });
  }
  for (const k of ["timeoutSeconds", "intervalSeconds", "requestTimeoutSeconds"]) {
    const v = news[k];
    if (v === undefined || isUnknown(v)) continue;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      failures.push({ property: k, reason: `${k} must be a number of seconds greater than 0 (got ${JSON.stringify(v)})` });
    }
  }
  const headers = news["headers"];
  if (headers !== undefined && !isUnknown(headers)) {
    if (headers === null || typeof headers !== "object" || Array.isArray(headers)) {
      failures.push({ property: "headers", reason: "headers must be a map of header name to string value" });
    } else {
      for (const [name, value] of Object.entries(headers as Record<string, unknown>)) {
        if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
          failures.push({ property: "headers", reason: `headers: ${JSON.stringify(name)} is not a valid HTTP header name` });
        } else if (typeof value !== "string" && !isUnknown(value)) {
          failures.push({ property: "headers", reason: `headers.${name} must be a string` });
        } else if (typeof value === "string" && /[\r\n]/.test(value)) {
          failures.push({ property: "headers", reason: `headers.${name} must not contain line breaks` });
        }
      }
    }
  }
  const ca = news["caCertPem"];
  if (ca !== undefined && ca !== "" && !isUnknown(ca) && (typeof ca !== "string" || !ca.includes("-----BEGIN CERTIFICATE-----"))) {
    failures.push({ property: "caCertPem", reason: "caCertPem must be a PEM certificate (-----BEGIN CERTIFICATE----- …)" });
  }
  const mode = news["versionProofMode"];
  if (mode !== undefined && !isUnknown(mode) && mode !== "readyz" && mode !== "host") {
    failures.push({ property: "versionProof", reason: `versionProof must be "readyz" (0.2.x) or "host" (0.1.x, proved by the install step) (got ${JSON.stringify(mode)})` });
  }
  const proof = news["hostProof"];
  if (mode === "host" && !isUnknown(proof) && (typeof proof !== "string" || proof.trim() === "")) {
    failures.push({ property: "hostProof", reason: 'hostProof (the install step\'s proof that the process on the port runs the installed binary) is required when versionProof is "host"' });
  }
  const dialect = news["dialect"];
  if (dialect !== undefined && !isUnknown(dialect) && dialect !== "v1" && dialect !== "frontend-v1") {
    failures.push({ property: "dialect", reason: `dialect must be "v1" (0.1.x) or "frontend-v1" (0.2.x) (got ${JSON.stringify(dialect)})` });
  }
  const key = news["apiKey"];
  if (news["smokeTest"] === true && (key === undefined || key === null || key === "")) {
    failures.push({
      property: "apiKey",
      reason: "apiKey (a backend API key, as a secret) is required when smokeTest is true — set it with: pulumi config set --secret progressdb:apiKey <key>",
    });
  }
  const admin = news["adminApiKey"];
  if (news["dataContinuity"] === true && dialect === "frontend-v1" && (admin === undefined || admin === null || admin === "")) {
    failures.push({
      property: "adminApiKey",
      reason: "adminApiKey (as a secret) is required when dataContinuity is true on 0.2.x: only an admin key lists the thread owners and /admin/stats",
    });
  }
  const baseline = news["baseline"];
  if (baseline !== undefined && baseline !== null && !isUnknown(baseline) && (typeof baseline !== "object" || Array.isArray(baseline))) {
    failures.push({ property: "baseline", reason: "baseline must be a DataSnapshot's sample (an object)" });
  }
  return failures;
}

/** Equal as data (object key order does not matter: the state may reorder keys). */
function same(a: unknown, b: unknown): boolean {
  return canonicalJson(a ?? null) === canonicalJson(b ?? null);
}

/**
 * `diff`: a new version, deployment or URL is a different thing to prove →
 * replace; any other setting (timeouts, headers, CA, smoke test, proof,
 * dialect, baseline, provider code version) → update, i.e. re-check in
 * place; a state that `read` found unhealthy → update too, so the next
 * `pulumi up` re-checks it.
 */
export function diffInputs(olds: HealthInputs, news: HealthInputs): { changes: boolean; replaces: string[]; deleteBeforeReplace: boolean } {
  const replaceKeys = ["url", "expectedVersion", "deploymentId"];
  const replaces = replaceKeys.filter((k) => !same(olds[k], news[k]));
  const defaults: Record<string, unknown> = {
    timeoutSeconds: 120,
    intervalSeconds: 2,
    requestTimeoutSeconds: 5,
    smokeTest: false,
    versionProofMode: "readyz",
    dialect: "frontend-v1",
  };
  // The fleet note only describes where a rollout stands: a new text is no reason to re-check.
  const updateKeys = inputKeys().filter((k) => !replaceKeys.includes(k) && k !== "fleetNote");
  const updated = updateKeys.some((k) => !same(olds[k] ?? defaults[k], news[k] ?? defaults[k]));
  const unhealthy = olds["status"] !== undefined && olds["status"] !== "healthy";
  return { changes: replaces.length > 0 || updated || unhealthy, replaces, deleteBeforeReplace: false };
}

/**
 * On update: the continuity of this same baseline already passed, so it is
 * not compared again (data written since would make a re-comparison
 * meaningless, and a false "failed" reverts the upgrade). Any other case
 * (new baseline, previously failed or skipped) compares again.
 */
export function continuitySettled(olds: HealthInputs, news: HealthInputs): boolean {
  return olds["continuity"] === "passed" && same(olds["baseline"], news["baseline"]);
}
