// The API smoke test, per dialect, on the real API of each version:
//   v1 (0.1.x):          POST /v1/threads {author,title} → 200 {id};
//                        POST /v1/threads/{id}/messages {author,body} → 200 {id};
//                        GET  /v1/threads/{id}/messages?author= → {thread,messages};
//                        DELETE …/messages/{mid}?author= and /v1/threads/{id}?author= → 204.
//   frontend-v1 (0.2.x): POST /frontend/v1/threads {title} (+X-User-ID) → 202 {key};
//                        GET  …/{key} → 200 {thread} once applied (writes are asynchronous);
//                        POST …/{key}/messages {body} → 202 {key} (provisional);
//                        GET  …/{key}/messages → {thread,messages,pagination} (stored keys end ":000000000");
//                        DELETE …/messages/{stored key} and …/{key} → 202.
// A backend key may name the author (0.2 rejects a body author with 400).
//
// Serialized INTO the HealthCheck provider closure (rules in ./index.ts).

import { apiCall, backoffDelayMs, endpoint, errorMessage, field, noObs, segment, type ApiContext, type ApiResult, type Observation } from "./http";
import type { PollOptions } from "./poll";

type Step = { ok: true; json: unknown } | { ok: false; obs: Observation };

/**
 * Creates a thread, posts a message, reads it back (0.2 mutations are
 * asynchronous: 202, so reads are retried briefly), then deletes the message
 * and the thread — the deletes run even when an earlier step failed.
 * Returns "" on success, or the failure text (not yet scrubbed).
 */
export async function runSmokeTest(
  opts: PollOptions,
  base: URL,
  now: () => number,
  sleep: (ms: number) => Promise<void>,
  random: () => number,
): Promise<string> {
  const dialect = opts.dialect ?? "frontend-v1";
  const v1 = dialect === "v1";
  const ctx: ApiContext = {
    base,
    headers: opts.headers,
    requestTimeoutMs: opts.requestTimeoutMs,
    caCertPem: opts.caCertPem,
    deadline: now() + (opts.smokeTimeoutMs ?? 30000),
    now,
    sleep,
    random,
  };
  const user = opts.smokeUserId ?? "progressdb-upgrades-smoke";
  const text = `progressdb-upgrades smoke test ${globalThis.crypto.randomUUID()}`;
  const retryBase = Math.min(opts.intervalMs, 500);
  const apiName = v1 ? "the 0.1.x /v1 API (dialect \"v1\")" : "the 0.2.x /frontend/v1 API (dialect \"frontend-v1\")";

  /** One API call, its failure worded for the smoke test. */
  const call = async (method: string, path: string, o: { body?: unknown; query?: Record<string, string>; ok: number[]; cleanup?: boolean }): Promise<Step> => {
    const r: ApiResult = await apiCall(ctx, method, path, {
      key: opts.apiKey ?? "",
      userId: v1 ? undefined : user,
      query: o.query,
      body: o.body,
      okStatuses: o.ok,
      withinBudget: !o.cleanup,
    });
    if (r.ok) return { ok: true, json: r.json };
    const status = r.res?.status ?? 0;
    let cause = r.obs.cause;
    if (status === 401 || status === 403) {
      cause = `the API key was rejected (${status}): apiKey must be a backend key (sent as X-API-Key${v1 ? ", the author in the body or ?author=" : ", with X-User-ID"})`;
    } else if (status === 400 || status === 405 || status === 422) {
      cause = `the service rejected the request as invalid (${status}): does this instance serve ${apiName}?`;
    } else if (status === 404) {
      cause = `not found: the thread/message is not there (the write was lost or not applied yet), or this instance does not serve ${apiName}`;
    }
    return { ok: false, obs: { ...r.obs, cause } };
  };
  /** Repeats `fn` while it asks to and time is left (asynchronous writes). */
  const retrying = async (fn: () => Promise<Step & { retry?: boolean }>): Promise<Step> => {
    for (let n = 1; ; n++) {
      const s = await fn();
      const delay = backoffDelayMs(n, retryBase, 2000, random);
      // Stop while the last answer is still the informative one (not a request cut short by the deadline).
      if (s.ok || !s.retry || ctx.deadline - now() < delay + Math.min(opts.requestTimeoutMs, 100)) return s;
      await sleep(delay);
    }
  };
  const is404 = (s: Step): boolean => !s.ok && / answered 404/.test(s.obs.seen);
  // 0.2 applies writes asynchronously: until the thread is applied its owner gets 403 {"error":"access denied"}
  // (a refused key gets 401, or 403 {"error":"forbidden"}).
  const notYetOwned = (s: Step): boolean => !v1 && !s.ok && / answered 403: .*access denied/.test(s.obs.seen);
  const failed = (step: string, obs: Observation): string => `smoke test failed at step "${step}": ${obs.seen}\nLikely cause: ${obs.cause}`;

  const threadsPath = v1 ? "/v1/threads" : "/frontend/v1/threads";
  const authorQuery = v1 ? { author: user } : undefined;
  let threadKey: string | undefined;
  let messageKey: string | undefined;

  const steps = async (): Promise<string> => {
    const t = await call("POST", threadsPath, { body: v1 ? { author: user, title: text } : { title: text }, ok: v1 ? [200, 201] : [200, 201, 202] });
    if (!t.ok) return failed("create thread", t.obs);
    const key = v1 ? field(t.json, "id") : (field(t.json, "key") ?? field(t.json, "thread", "key"));
    if (typeof key !== "string" || key === "") {
      return failed("create thread", {
        ...noObs(),
        seen: `POST ${endpoint(base, threadsPath).href} answered without a thread ${v1 ? "id" : "key"}`,
        cause: v1 ? 'the response has no {"id": ...}: is this a 0.1.x instance?' : 'the response has no {"key": ...}: is this a 0.2.x instance?',
      });
    }
    threadKey = key;
    const messagesPath = `${threadsPath}/${segment(threadKey)}/messages`;

    if (!v1) {
      // 0.2.1 answers 202 and applies later, and drops a write that races the thread's creation
      // (thread.delete 7 ms after it failed with "pebble: not found"): post only once the thread reads back.
      const seen = await retrying(async () => {
        const s = await call("GET", `${threadsPath}/${segment(key)}`, { ok: [200] });
        return is404(s) || notYetOwned(s) ? { ...s, retry: true } : s;
      });
      if (!seen.ok) return failed("read thread back", seen.obs);
    }

    const m = await retrying(async () => {
      const s = await call("POST", messagesPath, { body: v1 ? { author: user, body: { text } } : { body: { text } }, ok: v1 ? [200, 201] : [200, 201, 202] });
      // 0.2 queues the thread creation: a 404 right after it is not yet a failure.
      return !v1 && (is404(s) || notYetOwned(s)) ? { ...s, retry: true } : s;
    });
    if (!m.ok) return failed("post message", m.obs);
    const mk = v1 ? field(m.json, "id") : (field(m.json, "key") ?? field(m.json, "message", "key"));
    if (typeof mk === "string" && mk !== "") messageKey = mk;

    const rb = await retrying(async () => {
      const s = await call("GET", messagesPath, { query: authorQuery, ok: [200] });
      if (!s.ok) return is404(s) || notYetOwned(s) ? { ...s, retry: true } : s;
      const list = field(s.json, "messages");
      const found = Array.isArray(list) ? list.find((x) => field(x, "body", "text") === text) : undefined;
      if (found !== undefined) {
        // 0.2 stores the message under the provisional key plus ":000000000": delete that one.
        const fk = field(found, v1 ? "id" : "key");
        if (typeof fk === "string" && fk !== "") messageKey = fk;
        return s;
      }
      return {
        ok: false as const,
        retry: true,
        obs: {
          ...noObs(),
          seen: `GET ${endpoint(base, messagesPath).href} answered 200 without the posted message`,
          cause: "the posted message never appeared in the thread: writes are accepted but not applied (check the service's queue/store)",
        },
      };
    });
    if (!rb.ok) return failed("read message back", rb.obs);
    return "";
  };

  let failure: string;
  try {
    failure = await steps();
  } catch (e) {
    failure = `smoke test failed: ${errorMessage(e)}`;
  }
  // Clean up whatever was created, even after a failure.
  const cleanup: string[] = [];
  if (threadKey !== undefined) {
    const threadPath = `${threadsPath}/${segment(threadKey)}`;
    if (messageKey !== undefined) {
      const d = await call("DELETE", `${threadPath}/messages/${segment(messageKey)}`, { query: authorQuery, ok: [200, 202, 204, 404], cleanup: true });
      if (!d.ok) cleanup.push(`could not delete message ${messageKey}: ${d.obs.seen}`);
    }
    const dt = await call("DELETE", threadPath, { query: authorQuery, ok: [200, 202, 204], cleanup: true });
    if (!dt.ok) cleanup.push(`could not delete thread ${threadKey} (delete it by hand): ${dt.obs.seen}`);
  }
  if (cleanup.length > 0) {
    failure = (failure ? failure + "\n" : 'smoke test failed at step "clean up"\n') + "Cleanup: " + cleanup.join("; ");
  } else if (failure && threadKey !== undefined) {
    failure += `\nCleanup: thread ${threadKey} deleted.`;
  }
  return failure;
}
