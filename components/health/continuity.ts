// Data continuity across an upgrade: read a sample of threads and their
// messages from the OLD version (DataSnapshot), find the same threads again
// by content in the NEW version (HealthCheck), compare.
//
// What each version serves, with the keys the program has (verified on the
// real 0.1.2 and 0.2.1 binaries):
//   v1 (0.1.x), admin OR backend key:
//     GET /admin/stats                → {"threads":N,"messages":M} (counts every message version)
//     GET /admin/threads              → {"threads":[{id,title,author,created_ts,deleted?,…}]} — all of them,
//                                       soft-deleted ones too ("deleted":true)
//     GET /v1/messages?thread=<id>    → {"thread","messages":[{id,author,body,…}]} — latest version of each
//                                       live message, any author (GET /v1/threads/{id}/messages needs an
//                                       author who posted in the thread, 403 otherwise)
//   frontend-v1 (0.2.x): admin key only for /admin (backend → 403), backend key only for /frontend:
//     GET /admin/stats                → {"threads":N,"messages":M} (admin)
//     GET /admin/users                → {"users":[…],"pagination"} — every thread owner (admin)
//     GET /frontend/v1/threads?author=<u>&limit=1000[&after=<after_anchor>]
//                                     → {"threads":[{key,title,author,…}],"pagination":{after_anchor,has_after,total,…}}
//                                       newest first; only threads <u> owns (backend)
//     GET /frontend/v1/threads/<t>/messages?author=<owner>&limit=1000[&before=<before_anchor>]
//                                     → {"thread","messages":[{key,author,body,…}],"pagination":{before_anchor,has_before,total,…}}
//                                       newest page first; only the owner may read (others: 403 "access denied")
//   limit > 1000 → 400 in 0.2. Thread ids/keys change across a migration, so
//   threads are matched by (author, title) and compared by message content.
//
// The sample kept in state holds no user data in clear: salted sha256 digests
// only (the salt is random per snapshot).
//
// Serialized INTO both provider closures (rules in ./index.ts).

import { apiCall, field, scrubSecrets, secretsFor, type ApiContext, type ApiResult } from "./http";
import type { PollOptions } from "./poll";

export type Dialect = "v1" | "frontend-v1";

/** One sampled thread, as digests. */
export interface SampleThread {
  /** "#1" … position in the sample: names the thread without its title. */
  ref: string;
  /** Digest of the author: finds the author's threads again (0.2 lists threads per owner). */
  authorDigest: string;
  /** Digest of (author, title): finds the same thread again by content after a migration. */
  matchDigest: string;
  /** Digest of (title, author, message count, sorted message digests). */
  digest: string;
  messageCount: number;
  /** Sorted digests of (message author, body), 16 hex each; empty when `messagesTruncated`. */
  messageDigests: string[];
  /** More messages than are kept per thread: only count and `digest` compare. */
  messagesTruncated?: boolean;
}

/** A sample of the data, as read from one version. No user data in clear. */
export interface DataSample {
  /** false: nothing could be read (`reason` says why); a continuity gate on it is skipped. */
  available: boolean;
  /** "" when available. */
  reason: string;
  /** The API it was read through. */
  dialect: Dialect;
  /** What /readyz reported ("" for 0.1.x, which has none). */
  servedVersion: string;
  /** ISO time of the reading. */
  takenAt: string;
  /** Random per sample; every digest is salted with it. */
  salt: string;
  /** /admin/stats ({threads:0,messages:0} when not available). */
  stats: { threads: number; messages: number };
  /** Live threads the sample was drawn from (listed). */
  threadsListed: number;
  threads: SampleThread[];
}

/** A thread's content, in memory only. */
export interface ThreadContent {
  title: string;
  author: string;
  messages: { author: string; body: unknown }[];
  /** The reading stopped before the end (too many messages); `messageCount` is the server's total. */
  truncatedAt?: number;
}

/** A thread found in the new version: digests plus its title (for the message only, never stored in a sample). */
export interface ObservedThread extends SampleThread {
  title: string;
}

/** What the new version serves of a sample. */
export interface ObservedData {
  stats?: { threads: number; messages: number };
  threads: ObservedThread[];
}

export interface ContinuityResult {
  /** "passed", "failed" or "skipped: <why>". */
  continuity: string;
  /** "" unless failed. */
  message: string;
}

// ---------------------------------------------------------------- digests

/** JSON with object keys sorted at every level (a body's digest must not depend on key order). */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return "[" + v.map((x) => canonicalJson(x)).join(",") + "]";
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return "{" + Object.keys(o).sort().map((k) => JSON.stringify(k) + ":" + canonicalJson(o[k])).join(",") + "}";
  }
  return JSON.stringify(v ?? null) ?? "null";
}

/** Salted sha256 (hex) of the parts. */
export function saltedDigest(salt: string, ...parts: unknown[]): string {
  const crypto = process.getBuiltinModule("node:crypto") as typeof import("node:crypto");
  return crypto.createHash("sha256").update(canonicalJson([salt, ...parts])).digest("hex");
}

/** Per-thread message digests kept in a sample, at most. Beyond, only count + digest. */
function maxMessageDigests(): number {
  return 256;
}

/** A thread's content → its digests (`ref` names it in messages). */
export function digestThread(salt: string, t: ThreadContent, ref: string): SampleThread {
  const messages = t.messages.map((m) => saltedDigest(salt, "message", m.author, m.body).slice(0, 16)).sort();
  const count = t.truncatedAt ?? messages.length;
  const truncated = t.truncatedAt !== undefined || messages.length > maxMessageDigests();
  return {
    ref,
    authorDigest: saltedDigest(salt, "author", t.author),
    matchDigest: saltedDigest(salt, "match", t.author, t.title),
    digest: saltedDigest(salt, "thread", t.title, t.author, count, truncated ? [] : messages),
    messageCount: count,
    messageDigests: truncated ? [] : messages,
    ...(truncated ? { messagesTruncated: true } : {}),
  };
}

// ---------------------------------------------------------------- comparison

/** 'title' for a message: one line, at most 60 characters. */
function quoteTitle(title: string): string {
  // eslint-disable-next-line no-control-regex
  const flat = title.replace(/[\u0000-\u001f\u007f]+/g, " ").replace(/\s+/g, " ").trim();
  return "'" + (flat.length > 60 ? flat.slice(0, 60) + "…" : flat) + "'";
}

function countOf(list: readonly string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const d of list) m.set(d, (m.get(d) ?? 0) + 1);
  return m;
}

/** Messages of `a` also in `b`, counting repeats (multiset intersection size). */
function overlap(a: readonly string[], b: readonly string[]): number {
  const cb = countOf(b);
  let n = 0;
  for (const [d, k] of countOf(a)) n += Math.min(k, cb.get(d) ?? 0);
  return n;
}

/** Whether a baseline has anything to compare. */
export function hasData(s: DataSample): boolean {
  return s.threads.length > 0 || (s.stats?.threads ?? 0) > 0;
}

/**
 * Compares what the new version serves with the baseline, by content.
 * Fails (never throws) on: fewer threads in /admin/stats; a sampled thread
 * not found by (author, title); a thread with messages missing or changed;
 * a thread where a message appears more often than before ("duplicated by
 * the migration"). New messages or threads written since the snapshot pass.
 * `from`/`to` name the versions in the message.
 */
export function compareSample(baseline: DataSample, observed: ObservedData, from: string, to: string): ContinuityResult {
  if (!hasData(baseline)) return { continuity: "skipped: the baseline has no data (0 threads)", message: "" };
  const problems: string[] = [];
  const bs = baseline.stats;
  const os = observed.stats;
  if (bs !== undefined && os !== undefined && os.threads < bs.threads) {
    problems.push(`${to} serves ${os.threads} thread${os.threads === 1 ? "" : "s"} where ${from} served ${bs.threads}: data missing`);
  }

  const used = new Set<ObservedThread>();
  const missing: string[] = [];
  const threadProblems: string[] = [];
  for (const bt of baseline.threads) {
    const candidates = observed.threads.filter((ot) => !used.has(ot) && ot.matchDigest === bt.matchDigest);
    if (candidates.length === 0) {
      missing.push(bt.ref);
      continue;
    }
    // Same content first; otherwise the closest (most messages in common, then closest count).
    const exact = candidates.find((ot) => ot.digest === bt.digest);
    const best =
      exact ??
      candidates.reduce((a, b) => {
        const oa = overlap(bt.messageDigests, a.messageDigests);
        const ob = overlap(bt.messageDigests, b.messageDigests);
        if (oa !== ob) return oa > ob ? a : b;
        return Math.abs(a.messageCount - bt.messageCount) <= Math.abs(b.messageCount - bt.messageCount) ? a : b;
      });
    used.add(best);
    if (best === exact) continue;

    const head = `${to} serves ${best.messageCount} message${best.messageCount === 1 ? "" : "s"} in thread ${quoteTitle(best.title)} where ${from} served ${bt.messageCount}`;
    if (bt.messagesTruncated || best.messagesTruncated) {
      // Too many messages to keep each digest: only the count can tell.
      if (best.messageCount < bt.messageCount) threadProblems.push(`${head}: ${bt.messageCount - best.messageCount} missing`);
      else if (bt.messageCount > 0 && best.messageCount >= 2 * bt.messageCount) threadProblems.push(`${head}: duplicated by the migration?`);
      continue;
    }
    const bc = countOf(bt.messageDigests);
    const oc = countOf(best.messageDigests);
    let duplicated = 0;
    let lost = 0;
    for (const [d, k] of bc) {
      const n = oc.get(d) ?? 0;
      if (n > k) duplicated += n - k;
      if (n < k) lost += k - n;
    }
    const added = best.messageCount - (bt.messageCount - lost) - duplicated;
    if (duplicated > 0) {
      threadProblems.push(`${head}: duplicated by the migration${lost > 0 ? `, and ${lost} of the ${bt.messageCount} missing` : ""}`);
    } else if (lost > 0) {
      threadProblems.push(added > 0 ? `${head}: ${lost} of them changed or missing` : `${head}: ${lost} missing`);
    }
    // Only additions: messages written since the snapshot.
  }
  if (missing.length > 0) {
    const n = baseline.threads.length;
    const refs = missing.length <= 5 ? missing.join(", ") : `${missing.slice(0, 5).join(", ")} …`;
    problems.push(
      missing.length === n
        ? `${to} serves none of the ${n} sampled thread${n === 1 ? "" : "s"} ${from} served (looked up by author and title): data missing`
        : `${to} does not serve ${missing.length} of the ${n} sampled threads ${from} served (${refs}; looked up by author and title): data missing`,
    );
  }
  problems.push(...threadProblems.slice(0, 5));
  if (threadProblems.length > 5) problems.push(`and ${threadProblems.length - 5} more thread${threadProblems.length === 6 ? "" : "s"} differ`);
  return problems.length === 0 ? { continuity: "passed", message: "" } : { continuity: "failed", message: problems.join("; ") };
}

// ---------------------------------------------------------------- dialect clients

/** Keys and connection for reading data. */
export interface ReadContext {
  ctx: ApiContext;
  dialect: Dialect;
  apiKey?: string;
  adminApiKey?: string;
}

/** A read that could not be done: `denied` when a key was refused (a configuration problem, not a data one). */
export interface ReadFailure {
  failed: true;
  denied: boolean;
  text: string;
}

function isFailure(x: unknown): x is ReadFailure {
  return typeof x === "object" && x !== null && (x as { failed?: unknown }).failed === true;
}

function readFailure(r: ApiResult & { ok: false }, what: string): ReadFailure {
  const status = r.res?.status ?? 0;
  const denied = status === 401 || status === 403;
  return { failed: true, denied, text: `${what}: ${r.obs.seen}${r.obs.cause ? ` (${r.obs.cause})` : ""}` };
}

/** Data reads may be large (a thread list, a long thread). */
function dataCap(): number {
  return 64 * 1024 * 1024;
}

/** The key for /admin/* : 0.2 only takes an admin key; 0.1 takes either. */
function adminKey(rc: ReadContext): string | undefined {
  return rc.dialect === "v1" ? (rc.adminApiKey ?? rc.apiKey) : rc.adminApiKey;
}

/** The key for thread/message reads: 0.2 /frontend only takes a backend (or frontend) key; 0.1 either. */
function dataKey(rc: ReadContext): string | undefined {
  return rc.dialect === "v1" ? (rc.apiKey ?? rc.adminApiKey) : rc.apiKey;
}

/** What is missing to read this dialect, or "". */
export function missingKeys(dialect: Dialect, apiKey: string | undefined, adminApiKey: string | undefined): string {
  if (dialect === "v1") return apiKey || adminApiKey ? "" : "no API key (0.1.x reads threads with a backend or admin key)";
  if (!adminApiKey && !apiKey) return "no adminApiKey and no apiKey (0.2.x lists thread owners with an admin key and reads threads with a backend key)";
  if (!adminApiKey) return "no adminApiKey (0.2.x lists thread owners and stats with an admin key only)";
  if (!apiKey) return "no apiKey (0.2.x reads threads with a backend key only: the admin key gets 403 on /frontend)";
  return "";
}

/** GET /admin/stats → {threads, messages}, or undefined when not allowed / not there. */
export async function readStats(rc: ReadContext): Promise<{ threads: number; messages: number } | ReadFailure> {
  const r = await apiCall(rc.ctx, "GET", "/admin/stats", { key: adminKey(rc), okStatuses: [200] });
  if (!r.ok) return readFailure(r, "reading /admin/stats");
  const threads = field(r.json, "threads");
  const messages = field(r.json, "messages");
  if (typeof threads !== "number" || typeof messages !== "number") {
    return { failed: true, denied: false, text: `reading /admin/stats: the answer has no {"threads":N,"messages":M}` };
  }
  return { threads, messages };
}

/** A listed thread: what is needed to read its messages. */
interface ListedThread {
  id: string;
  title: string;
  author: string;
  createdTs: number;
}

function listedThread(x: unknown, idField: string): ListedThread | undefined {
  const id = field(x, idField);
  const author = field(x, "author");
  if (typeof id !== "string" || id === "" || field(x, "deleted") === true) return undefined;
  const title = field(x, "title");
  const created = field(x, "created_ts");
  return { id, title: typeof title === "string" ? title : "", author: typeof author === "string" ? author : "", createdTs: typeof created === "number" ? created : 0 };
}

/** 0.1.x: every live thread (GET /admin/threads), oldest first. */
async function listThreadsV1(rc: ReadContext): Promise<ListedThread[] | ReadFailure> {
  const r = await apiCall(rc.ctx, "GET", "/admin/threads", { key: adminKey(rc), okStatuses: [200], maxBodyBytes: dataCap() });
  if (!r.ok) return readFailure(r, "listing threads (GET /admin/threads)");
  const list = field(r.json, "threads");
  if (!Array.isArray(list)) return { failed: true, denied: false, text: 'listing threads: GET /admin/threads answered without {"threads":[…]} (is this a 0.1.x instance?)' };
  const out: ListedThread[] = [];
  for (const x of list) {
    const t = listedThread(x, "id");
    if (t) out.push(t);
  }
  return out.sort((a, b) => a.createdTs - b.createdTs || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** 0.2.x: every thread owner (GET /admin/users, admin key). */
async function listUsers(rc: ReadContext): Promise<string[] | ReadFailure> {
  const r = await apiCall(rc.ctx, "GET", "/admin/users", { key: rc.adminApiKey, okStatuses: [200], maxBodyBytes: dataCap() });
  if (!r.ok) return readFailure(r, "listing thread owners (GET /admin/users)");
  const list = field(r.json, "users");
  if (!Array.isArray(list)) return { failed: true, denied: false, text: 'listing thread owners: GET /admin/users answered without {"users":[…]} (is this a 0.2.x instance?)' };
  return list.filter((u): u is string => typeof u === "string" && u !== "").sort();
}

/** 0.2.x: the threads `user` owns, newest first, up to `max` (pages of ≤1000 via after=<after_anchor>). */
async function listThreadsOf(rc: ReadContext, user: string, max: number): Promise<ListedThread[] | ReadFailure> {
  const out: ListedThread[] = [];
  let after = "";
  for (let page = 0; page < 50 && out.length < max; page++) {
    const query: Record<string, string> = { author: user, limit: String(Math.min(1000, Math.max(1, max - out.length))) };
    if (after) query["after"] = after;
    const r = await apiCall(rc.ctx, "GET", "/frontend/v1/threads", { key: rc.apiKey, query, okStatuses: [200], maxBodyBytes: dataCap() });
    if (!r.ok) return readFailure(r, "listing a user's threads (GET /frontend/v1/threads)");
    const list = field(r.json, "threads");
    if (!Array.isArray(list)) return { failed: true, denied: false, text: 'listing threads: GET /frontend/v1/threads answered without {"threads":[…]}' };
    for (const x of list) {
      const t = listedThread(x, "key");
      if (t) out.push(t);
    }
    const next = field(r.json, "pagination", "after_anchor");
    if (field(r.json, "pagination", "has_after") !== true || typeof next !== "string" || next === "" || next === after || list.length === 0) break;
    after = next;
  }
  return out.slice(0, max);
}

/** Messages kept in memory per thread at most (beyond: the count only). */
function maxMessagesRead(): number {
  return 10000;
}

/** A thread's live messages, oldest first as far as the API orders them. */
async function readThread(rc: ReadContext, t: ListedThread): Promise<ThreadContent | ReadFailure> {
  const messages: { author: string; body: unknown }[] = [];
  const take = (list: unknown[]): void => {
    for (const m of list) {
      if (field(m, "deleted") === true) continue;
      const a = field(m, "author");
      messages.push({ author: typeof a === "string" ? a : "", body: field(m, "body") ?? null });
    }
  };
  if (rc.dialect === "v1") {
    const r = await apiCall(rc.ctx, "GET", "/v1/messages", { key: dataKey(rc), query: { thread: t.id }, okStatuses: [200], maxBodyBytes: dataCap() });
    if (!r.ok) return readFailure(r, "reading a thread's messages (GET /v1/messages?thread=)");
    const list = field(r.json, "messages");
    if (!Array.isArray(list)) return { failed: true, denied: false, text: 'reading messages: GET /v1/messages answered without {"messages":[…]}' };
    take(list);
    return { title: t.title, author: t.author, messages };
  }
  // 0.2.x: newest page first; older pages via before=<before_anchor>. Only the owner may read.
  let before = "";
  let total: number | undefined;
  for (let page = 0; page < 50; page++) {
    const query: Record<string, string> = { author: t.author, limit: "1000" };
    if (before) query["before"] = before;
    const r = await apiCall(rc.ctx, "GET", `/frontend/v1/threads/${encodeURIComponent(t.id).replace(/%3A/gi, ":")}/messages`, {
      key: rc.apiKey,
      query,
      okStatuses: [200],
      maxBodyBytes: dataCap(),
    });
    if (!r.ok) return readFailure(r, "reading a thread's messages (GET /frontend/v1/threads/<key>/messages)");
    const list = field(r.json, "messages");
    if (!Array.isArray(list)) return { failed: true, denied: false, text: 'reading messages: GET /frontend/v1/threads/<key>/messages answered without {"messages":[…]}' };
    take(list);
    const tot = field(r.json, "pagination", "total");
    if (typeof tot === "number") total = tot;
    const next = field(r.json, "pagination", "before_anchor");
    if (field(r.json, "pagination", "has_before") !== true || typeof next !== "string" || next === "" || next === before || list.length === 0) {
      return { title: t.title, author: t.author, messages };
    }
    if (messages.length >= maxMessagesRead()) break;
    before = next;
  }
  return { title: t.title, author: t.author, messages, truncatedAt: Math.max(total ?? 0, messages.length) };
}

/** Indices of `k` items spread evenly over `n` (first and last included). */
export function spread(n: number, k: number): number[] {
  if (k <= 0 || n <= 0) return [];
  if (n <= k) return Array.from({ length: n }, (_, i) => i);
  if (k === 1) return [0];
  const out = new Set<number>();
  for (let i = 0; i < k; i++) out.add(Math.round((i * (n - 1)) / (k - 1)));
  return [...out];
}

/**
 * Reads a sample of `sampleSize` live threads with their messages (as digests):
 * 0.1.x — spread over all threads, oldest to newest; 0.2.x — spread over the
 * owners, newest threads of each, taken in turn.
 */
export async function readSample(rc: ReadContext, salt: string, sampleSize: number): Promise<{ threads: SampleThread[]; threadsListed: number } | ReadFailure> {
  let picked: ListedThread[];
  let listed = 0;
  if (rc.dialect === "v1") {
    const all = await listThreadsV1(rc);
    if (isFailure(all)) return all;
    listed = all.length;
    picked = spread(all.length, sampleSize).map((i) => all[i]!);
  } else {
    const users = await listUsers(rc);
    if (isFailure(users)) return users;
    const perUser: ListedThread[][] = [];
    for (const i of spread(users.length, sampleSize)) {
      const ts = await listThreadsOf(rc, users[i]!, sampleSize);
      if (isFailure(ts)) return ts;
      listed += ts.length;
      perUser.push(ts);
    }
    picked = [];
    for (let round = 0; picked.length < sampleSize && perUser.some((l) => l.length > round); round++) {
      for (const l of perUser) if (l[round] && picked.length < sampleSize) picked.push(l[round]!);
    }
  }
  const threads: SampleThread[] = [];
  for (const t of picked) {
    const c = await readThread(rc, t);
    if (isFailure(c)) return c;
    threads.push(digestThread(salt, c, `#${threads.length + 1}`));
  }
  return { threads, threadsListed: listed };
}

/** Finds the baseline's threads in the (new) version `rc` reads, by author and title. */
export async function findSample(rc: ReadContext, baseline: DataSample): Promise<ObservedThread[] | ReadFailure> {
  const want = new Set(baseline.threads.map((t) => t.matchDigest));
  const authors = new Set(baseline.threads.map((t) => t.authorDigest));
  const cap = Math.max(3 * baseline.threads.length, 10);
  let candidates: ListedThread[] = [];
  const isWanted = (t: ListedThread): boolean => want.has(saltedDigest(baseline.salt, "match", t.author, t.title));
  if (rc.dialect === "v1") {
    const all = await listThreadsV1(rc);
    if (isFailure(all)) return all;
    candidates = all.filter(isWanted);
  } else {
    const users = await listUsers(rc);
    if (isFailure(users)) return users;
    for (const u of users.filter((x) => authors.has(saltedDigest(baseline.salt, "author", x)))) {
      const ts = await listThreadsOf(rc, u, 50000);
      if (isFailure(ts)) return ts;
      candidates.push(...ts.filter(isWanted));
    }
  }
  const out: ObservedThread[] = [];
  for (const t of candidates.slice(0, cap)) {
    const c = await readThread(rc, t);
    if (isFailure(c)) return c;
    out.push({ ...digestThread(baseline.salt, c, t.id), title: t.title });
  }
  return out;
}

// ---------------------------------------------------------------- the gate (HealthCheck)

/**
 * The continuity gate, after health and version are proved: reads the
 * baseline's threads again through the NEW dialect and compares. Never throws:
 * "passed", "failed" (+ message), or "skipped: <why>" (off, no baseline, the
 * snapshot had nothing, keys missing or refused).
 */
export async function runContinuity(
  opts: PollOptions,
  base: URL,
  now: () => number,
  sleep: (ms: number) => Promise<void>,
  random: () => number,
): Promise<ContinuityResult> {
  const b = opts.baseline;
  const enabled = opts.dataContinuity ?? Boolean(opts.adminApiKey);
  if (!enabled) {
    return { continuity: opts.dataContinuity === false ? "skipped: dataContinuity is off" : "skipped: no adminApiKey (dataContinuity is on by default only with one)", message: "" };
  }
  if (b === undefined || b === null || typeof b !== "object") return { continuity: "skipped: no baseline sample", message: "" };
  if (!b.available) return { continuity: `skipped: no baseline (${b.reason || "the snapshot could not read the data"})`, message: "" };
  if (!hasData(b)) return { continuity: "skipped: the baseline has no data (0 threads)", message: "" };
  const dialect = opts.dialect ?? "frontend-v1";
  const lacking = missingKeys(dialect, opts.apiKey, opts.adminApiKey);
  if (lacking) return { continuity: `skipped: ${lacking}`, message: "" };

  const from = opts.baselineVersion ? opts.baselineVersion : b.servedVersion || "the previous version";
  const to = opts.expectedVersion;
  const rc: ReadContext = {
    ctx: { base, headers: opts.headers, requestTimeoutMs: opts.requestTimeoutMs, caCertPem: opts.caCertPem, deadline: now() + (opts.continuityTimeoutMs ?? 60000), now, sleep, random },
    dialect,
    apiKey: opts.apiKey,
    adminApiKey: opts.adminApiKey,
  };
  const secrets = secretsFor(base, [opts.apiKey, opts.adminApiKey], opts.headers);
  const unread = (f: ReadFailure): ContinuityResult =>
    f.denied
      ? { continuity: scrubSecrets(`skipped: ${to} refused a key while reading the sample — ${f.text}`, secrets), message: "" }
      : { continuity: "failed", message: scrubSecrets(`${to} could not serve the sample ${from} served: ${f.text}`, secrets) };
  try {
    let stats: { threads: number; messages: number } | undefined;
    if (dialect === "v1" || opts.adminApiKey) {
      const s = await readStats(rc);
      if (isFailure(s)) return unread(s);
      stats = s;
    }
    const found = await findSample(rc, b);
    if (isFailure(found)) return unread(found);
    const r = compareSample(b, { stats, threads: found }, from, to);
    return { continuity: r.continuity, message: r.message };
  } catch (e) {
    return { continuity: "failed", message: scrubSecrets(`the continuity check could not complete: ${e instanceof Error ? e.message : String(e)}`, secrets) };
  }
}
