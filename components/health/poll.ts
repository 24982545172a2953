// The health poll: /healthz, then the version proof (/readyz, or the host's
// proof for 0.1.x, which has no /readyz), then the optional smoke test and
// the data-continuity gate.
//
// Serialized INTO the HealthCheck provider closure (rules in ./index.ts).

import type { DataSample, Dialect } from "./continuity";
import { runContinuity } from "./continuity";
import {
  answered,
  backoffDelayMs,
  diagnoseError,
  displayBase,
  endpoint,
  errorCode,
  field,
  noObs,
  parseJson,
  request,
  scrubSecrets,
  seconds,
  secretsFor,
  type HttpResponse,
  type Observation,
} from "./http";
import { runSmokeTest } from "./smoke";

export type VersionProof = "readyz" | "host";

/** What `pollUntilHealthy` / `runHealthCheck` need. Times are milliseconds. */
export interface PollOptions {
  /** Base URL of the instance, e.g. http://10.0.0.5:8080 (no /healthz). */
  url: string;
  /** Version to prove, e.g. "0.2.1" (a leading "v" is ignored on both sides). */
  expectedVersion: string;
  /** Total budget. The poll ends at most one `intervalMs` after it (see runHealthCheck). */
  timeoutMs: number;
  /** Base of the exponential backoff. */
  intervalMs: number;
  /** Cut for one HTTP request (connect + headers + body). */
  requestTimeoutMs: number;
  /** Backoff ceiling. Defaults to 4 × intervalMs. */
  maxIntervalMs?: number;
  /** Extra request headers (e.g. for an auth proxy in front of the instance). */
  headers?: Record<string, string>;
  /** PEM of the CA (or the self-signed certificate) to trust for https. */
  caCertPem?: string;
  /**
   * How the version is proved. "readyz" (0.2.x): /readyz answers 200 with the
   * version. "host" (0.1.x: no /readyz, reports "dev"): the install step
   * proved on the host that the process on the port runs the installed binary
   * (`hostProof`); here /healthz must be ok and /readyz must NOT answer 200.
   * Defaults to "readyz".
   */
  versionProof?: VersionProof;
  /** The install step's proof text (required with versionProof "host"). */
  hostProof?: string;
  /** API of the running version: "v1" (0.1.x) or "frontend-v1" (0.2.x). Defaults to "frontend-v1". */
  dialect?: Dialect;
  /** Run the API smoke test after the instance is healthy. Defaults to false. */
  smokeTest?: boolean;
  /** Backend API key (smoke test, sample reads). Secret: never echoed. */
  apiKey?: string;
  /** Admin API key (stats, 0.2 user list for the continuity gate). Secret: never echoed. */
  adminApiKey?: string;
  /** User the smoke test acts as. Defaults to "progressdb-upgrades-smoke". */
  smokeUserId?: string;
  /** Budget of the smoke test, separate from timeoutMs. Defaults to 30000. */
  smokeTimeoutMs?: number;
  /** Sample of the data taken from the old version before the upgrade (DataSnapshot). */
  baseline?: DataSample;
  /** The version the baseline was read from, for messages. Defaults to "the previous version". */
  baselineVersion?: string;
  /** Compare the baseline with what the new version serves. Defaults to true when adminApiKey is set. */
  dataContinuity?: boolean;
  /** Budget of the continuity read, separate from timeoutMs. Defaults to 60000. */
  continuityTimeoutMs?: number;
  /** A fleet's canary: once healthy, run this long on the new version, then prove health and version again. */
  bakeMs?: number;
  /** A fleet: which instance runs which version, appended to a failure. */
  fleetNote?: string;
}

/** Injectable clock/sleep/randomness (tests); defaults are the real ones. */
export interface PollDeps {
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
}

/** "passed", "failed", or "skipped: <why>". */
export type ContinuityStatus = string;

export interface PollResult {
  status: "healthy";
  /** The version /readyz reported (as reported); with versionProof "host", expectedVersion. */
  reportedVersion: string;
  /** How the version was proved: `readyz reported "v0.2.1"` or `host: <hostProof>`. */
  versionProof: string;
  attempts: number;
  elapsedMs: number;
  /** ISO timestamp of the successful check. */
  checkedAt: string;
  smokeResult: "passed" | "skipped";
  continuity: ContinuityStatus;
  /** "" unless continuity is "failed": then the numbers, e.g. "0.2.1 serves 4 messages in thread 'welcome' where 0.1.2 served 2: duplicated by the migration". */
  continuityMessage: string;
}

/** Non-throwing form, used by `read` (refresh) to report an unhealthy instance. */
export interface HealthOutcome {
  ok: boolean;
  /** Last version /readyz reported ("" if it never reported one); with versionProof "host", expectedVersion once healthy. */
  reportedVersion: string;
  /** How the version was proved; "" when it was not. */
  versionProof: string;
  attempts: number;
  elapsedMs: number;
  checkedAt: string;
  smokeResult: "passed" | "skipped" | "failed" | "not-run";
  continuity: ContinuityStatus;
  continuityMessage: string;
  /** "" when ok; otherwise the one readable failure message. */
  message: string;
}

// ---------------------------------------------------------------- versions

/** Version compare key: trims and drops a leading "v". */
export function normalizeVersion(v: string): string {
  return v.trim().replace(/^v(?=\d)/, "");
}

export function compareSemver(a: string, b: string): number | undefined {
  const re = /^(\d+)\.(\d+)\.(\d+)/;
  const ma = re.exec(a);
  const mb = re.exec(b);
  if (!ma || !mb) return undefined;
  for (let i = 1; i <= 3; i++) {
    const d = Number(ma[i]) - Number(mb[i]);
    if (d !== 0) return d;
  }
  return 0;
}

// ---------------------------------------------------------------- diagnosis

/** What a 0.1.x answers on /readyz (it has none): 401 without a key, 404 with one. */
function noReadyzCause(): string {
  return 'no /readyz endpoint: a 0.1.x release (which has none: 401 without a key, 404 with one) is answering, or url points below the server root; a 0.1.x version is proved with versionProof "host"';
}

/** Common non-2xx causes for the health endpoints. */
function statusCause(path: string, res: HttpResponse): { cause: string; fatal: boolean } {
  if (res.status === 400 && /HTTP request to an HTTPS server/i.test(res.body)) {
    return { cause: "the port serves https: use an https:// url", fatal: true };
  }
  if (path === "/readyz" && (res.status === 401 || res.status === 404)) {
    return { cause: noReadyzCause(), fatal: false };
  }
  if (res.status === 401 || res.status === 403) {
    return { cause: `${path} was rejected with ${res.status}: an auth proxy or the ip_whitelist is in front; set headers or allow this host`, fatal: false };
  }
  if (res.status === 404) {
    return { cause: "/healthz not found: url must be the ProgressDB base URL (without /healthz); is something else answering on this port?", fatal: false };
  }
  if (res.status === 502 || res.status === 504) {
    return { cause: `a proxy in front of the instance answered ${res.status}: the service behind it is down or not reachable`, fatal: false };
  }
  if (res.status >= 500) {
    return { cause: `${path} answered ${res.status}: the service is up but failing`, fatal: false };
  }
  return { cause: `${path} answered ${res.status}, expected 200`, fatal: false };
}

/** One attempt: /healthz, then /readyz (whose answer proves the version, or — host proof — must not be a 200). */
async function probe(opts: PollOptions, base: URL, hardDeadline: number, now: () => number): Promise<Observation> {
  const expected = normalizeVersion(opts.expectedVersion);
  const headers: Record<string, string> = {
    Accept: "application/json",
    "User-Agent": "progressdb-upgrades-healthcheck",
    ...(opts.headers ?? {}),
  };
  const getJson = async (
    path: string,
  ): Promise<{ kind: "error"; obs: Observation } | { kind: "res"; res: HttpResponse; url: URL; json: unknown; isJson: boolean }> => {
    const url = endpoint(base, path);
    const left = hardDeadline - now();
    const budget = Math.max(1, Math.min(opts.requestTimeoutMs, left));
    try {
      const { res, url: finalUrl } = await request({ url, method: "GET", headers, timeoutMs: budget, caCertPem: opts.caCertPem });
      const parsed = parseJson(res.body);
      return { kind: "res", res, url: finalUrl, json: parsed.ok ? parsed.value : undefined, isJson: parsed.ok };
    } catch (e) {
      const obs = diagnoseError("GET", url, e, Boolean(opts.caCertPem));
      obs.cutByDeadline = errorCode(e) === "REQUEST_TIMEOUT" && budget < opts.requestTimeoutMs;
      return { kind: "error", obs };
    }
  };
  const fail = (seen: string, cause: string, fatal = false, version?: string): Observation => ({
    ok: false,
    fatal,
    cutByDeadline: false,
    seen,
    cause,
    version,
  });

  const h = await getJson("/healthz");
  if (h.kind === "error") return h.obs;
  if (h.res.status !== 200) {
    const sc = statusCause("/healthz", h.res);
    return fail(answered("GET", h.url, h.res), sc.cause, sc.fatal);
  }
  if (!h.isJson) {
    return fail(answered("GET", h.url, h.res), "/healthz answered 200 but not with JSON: url may point at another service or a proxy page");
  }
  const hs = field(h.json, "status");
  if (hs !== "ok") {
    return fail(answered("GET", h.url, h.res), `/healthz reports status ${JSON.stringify(hs ?? null)}, expected "ok"`);
  }

  const r = await getJson("/readyz");
  if (r.kind === "error") return r.obs;
  const reported = field(r.json, "version");
  const version = typeof reported === "string" ? reported : undefined;

  if (opts.versionProof === "host") {
    // 0.1.x has no /readyz: 401 without a key (we send none), 404 with one (a proxy may add it).
    if (r.res.status === 401 || r.res.status === 404) {
      return { ok: true, fatal: false, cutByDeadline: false, seen: answered("GET", r.url, r.res), cause: "", version: opts.expectedVersion };
    }
    if (r.res.status === 200 || version !== undefined) {
      const who = version !== undefined && version.trim() !== "" ? version : "a version it did not name";
      return fail(
        answered("GET", r.url, r.res),
        `/readyz answered ${r.res.status} with ${who}: a 0.2-family process (${who}) is answering where ${opts.expectedVersion} (0.1.x, which has no /readyz) was expected — the host proof is about another process, or the new binary was not the one started`,
        false,
        version,
      );
    }
    const sc = statusCause("/readyz", r.res);
    return fail(answered("GET", r.url, r.res), `${sc.cause} (with versionProof "host", /readyz must answer 401 or 404 as 0.1.x does)`, sc.fatal);
  }

  if (r.res.status === 503) {
    return fail(
      answered("GET", r.url, r.res),
      "/readyz answered 503: the service is up but its store is not open yet (still starting or migrating data)",
      false,
      version,
    );
  }
  if (r.res.status !== 200) {
    const sc = statusCause("/readyz", r.res);
    return fail(answered("GET", r.url, r.res), sc.cause, sc.fatal, version);
  }
  if (!r.isJson) {
    return fail(answered("GET", r.url, r.res), "/readyz answered 200 but not with JSON: url may point at another service or a proxy page");
  }
  const rs = field(r.json, "status");
  if (rs !== "ok") {
    return fail(answered("GET", r.url, r.res), `/readyz reports status ${JSON.stringify(rs ?? null)}, expected "ok"`, false, version);
  }
  if (version === undefined || version.trim() === "") {
    return fail(answered("GET", r.url, r.res), "/readyz did not report a version: a release without version reporting is running");
  }
  if (normalizeVersion(version) !== expected) {
    const cmp = compareSemver(normalizeVersion(version), expected);
    const cause =
      cmp !== undefined && cmp > 0
        ? `answering ${version}, newer than the expected ${opts.expectedVersion}: another deployment replaced it, or expectedVersion is stale`
        : `still answering ${version}: the old binary is running (expected ${opts.expectedVersion}); the new one was not installed/restarted, or it failed and the old one came back`;
    return fail(answered("GET", r.url, r.res), cause, false, version);
  }
  return { ok: true, fatal: false, cutByDeadline: false, seen: answered("GET", r.url, r.res), cause: "", version };
}

// ---------------------------------------------------------------- the poll

/**
 * Polls `opts.url` until /healthz answers {"status":"ok"} and the version is
 * proved (see `versionProof`); then, if asked, runs the smoke test, then the
 * continuity gate. Never throws for a health failure: returns `ok: false`
 * with one readable message (URL, wait, attempts, last response, likely
 * cause). A continuity failure is not a health failure: `ok` stays true and
 * `continuity` is "failed" (a later step reverts the upgrade on it).
 *
 * Timing: attempt 1 is immediate; between attempts the delay is
 * `backoffDelayMs` clamped to the time left; an attempt may start up to the
 * deadline and its requests are cut `intervalMs` after it, so the whole poll
 * ends within [timeoutMs, timeoutMs + intervalMs] (+ scheduling noise) unless
 * it succeeds or hits a fatal error first.
 */
export async function runHealthCheck(opts: PollOptions, deps: PollDeps = {}): Promise<HealthOutcome> {
  const now = deps.now ?? (() => Date.now());
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const random = deps.random ?? Math.random;
  const start = now();
  const base = new URL(opts.url);
  const secrets = secretsFor(base, [opts.apiKey, opts.adminApiKey], opts.headers);
  const deadline = start + opts.timeoutMs;
  const hardDeadline = deadline + opts.intervalMs;
  const maxInterval = opts.maxIntervalMs ?? opts.intervalMs * 4;
  const hostMode = opts.versionProof === "host";
  const notRun = (why: string): Pick<HealthOutcome, "continuity" | "continuityMessage"> => ({ continuity: `skipped: ${why}`, continuityMessage: "" });

  if (hostMode && (opts.hostProof === undefined || opts.hostProof.trim() === "")) {
    const end = now();
    return {
      ok: false,
      reportedVersion: "",
      versionProof: "",
      attempts: 0,
      elapsedMs: end - start,
      checkedAt: new Date(end).toISOString(),
      smokeResult: opts.smokeTest ? "not-run" : "skipped",
      ...notRun("the version was not proved"),
      message:
        `health check of ${displayBase(base)} failed: versionProof is "host" but hostProof is empty — ` +
        `the install step did not prove that the process listening on the port runs the installed ${opts.expectedVersion} binary`,
    };
  }

  let attempts = 0;
  let last: Observation | undefined;
  let lastVersion = "";
  for (;;) {
    attempts++;
    const obs = await probe(opts, base, hardDeadline, now);
    if (obs.version !== undefined) lastVersion = obs.version;
    if (obs.ok) {
      const reportedVersion = obs.version ?? "";
      const proof = hostMode ? `host: ${(opts.hostProof ?? "").trim()}` : `readyz reported ${JSON.stringify(reportedVersion)}`;
      let smokeResult: HealthOutcome["smokeResult"] = "skipped";
      let message = "";
      if (opts.smokeTest) {
        const failure = await runSmokeTest(opts, base, now, sleep, random);
        smokeResult = failure ? "failed" : "passed";
        if (failure) message = scrubSecrets(`health check of ${displayBase(base)}: healthy at ${reportedVersion}, but the ${failure}`, secrets);
      }
      let cont: Pick<HealthOutcome, "continuity" | "continuityMessage"> = notRun("the smoke test failed");
      if (message === "") {
        const c = await runContinuity(opts, base, now, sleep, random);
        cont = { continuity: c.continuity, continuityMessage: scrubSecrets(c.message, secrets) };
      }
      const end = now();
      return {
        ok: message === "",
        reportedVersion,
        versionProof: scrubSecrets(proof, secrets),
        attempts,
        elapsedMs: end - start,
        checkedAt: new Date(end).toISOString(),
        smokeResult,
        ...cont,
        message,
      };
    }
    // Keep the more informative earlier observation if this one was only cut by our own deadline.
    if (!(obs.cutByDeadline && last !== undefined)) last = obs;
    const remaining = deadline - now();
    if (obs.fatal || remaining <= 0) break;
    await sleep(Math.min(backoffDelayMs(attempts, opts.intervalMs, maxInterval, random), remaining));
  }
  const end = now();
  const elapsed = end - start;
  const seen = last ?? noObs();
  const head = seen.fatal
    ? `health check of ${displayBase(base)} failed: gave up after ${seconds(elapsed)} and ${attempts} attempt${attempts === 1 ? "" : "s"} (not retried: waiting cannot fix this)`
    : `health check of ${displayBase(base)} failed: not healthy at version ${opts.expectedVersion} after waiting ${seconds(elapsed)} (timeout ${seconds(opts.timeoutMs)}), ${attempts} attempt${attempts === 1 ? "" : "s"}`;
  const message = scrubSecrets(`${head}\nLast seen: ${seen.seen}\nLikely cause: ${seen.cause}`, secrets);
  return {
    ok: false,
    reportedVersion: lastVersion,
    versionProof: "",
    attempts,
    elapsedMs: elapsed,
    checkedAt: new Date(end).toISOString(),
    smokeResult: opts.smokeTest ? "not-run" : "skipped",
    ...notRun("the instance is not healthy"),
    message,
  };
}

/** Throwing form for create/update: resolves when healthy (whatever the continuity), rejects with the one readable message. */
export async function pollUntilHealthy(opts: PollOptions, deps: PollDeps = {}): Promise<PollResult> {
  const fail = (message: string) => new Error(opts.fleetNote ? `${message}\n${opts.fleetNote}` : message);
  const o = await runHealthCheck(opts, deps);
  if (!o.ok) throw fail(o.message);
  if (opts.bakeMs && opts.bakeMs > 0) {
    await (deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms))))(opts.bakeMs);
    // Health and version only: the smoke test and the continuity gate already passed.
    const again = await runHealthCheck({ ...opts, smokeTest: false, dataContinuity: false, timeoutMs: opts.requestTimeoutMs }, deps);
    if (!again.ok) throw fail(`the canary was healthy on ${opts.expectedVersion}, then failed after baking for ${opts.bakeMs / 1000} s: ${again.message}`);
  }
  return {
    status: "healthy",
    reportedVersion: o.reportedVersion,
    versionProof: o.versionProof,
    attempts: o.attempts,
    elapsedMs: o.elapsedMs,
    checkedAt: o.checkedAt,
    smokeResult: o.smokeResult === "passed" ? "passed" : "skipped",
    continuity: o.continuity,
    continuityMessage: o.continuityMessage,
  };
}
