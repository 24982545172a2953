// HealthCheck polling logic, tested directly against real loopback servers.
import { beforeAll, describe, expect, it } from "vitest";
import { HEALTH_PROVIDER_VERSION, healthProvider } from "../../components/healthCheck";
import {
  backoffDelayMs,
  diffInputs,
  pollUntilHealthy,
  runHealthCheck,
  scrubSecrets,
  validateInputs,
  type PollOptions,
} from "../../components/health";
import { fakeApi, fakeProgressDb, fakeV1Api, freePort, json, selfSignedCert, servePerTest, type SelfSignedCert, type TestServer } from "./servers";

const API_KEY = "sk_test_0123456789abcdef";

const start = servePerTest();

/** Short timings so the whole file runs in a few seconds. */
function fast(url: string, extra: Partial<PollOptions> = {}): PollOptions {
  return { url, expectedVersion: "0.2.0", timeoutMs: 2000, intervalMs: 20, requestTimeoutMs: 500, ...extra };
}

async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  throw new Error("expected the health check to fail, but it passed");
}

describe("pollUntilHealthy: success paths", () => {
  it("slow start: 503 from /readyz for a while, then ok; reports the attempts", async () => {
    const s = await start(fakeProgressDb({ version: "0.2.0", notReadyFor: 3 }));
    const r = await pollUntilHealthy(fast(s.url));
    expect(r).toMatchObject({ status: "healthy", reportedVersion: "0.2.0", attempts: 4, smokeResult: "skipped" });
    expect(r.elapsedMs).toBeGreaterThanOrEqual(0);
    expect(Date.parse(r.checkedAt)).not.toBeNaN();
    // each attempt asks /healthz then /readyz
    expect(s.requests.map((q) => q.path)).toEqual(Array(4).fill(["/healthz", "/readyz"]).flat());
  });

  it("connection refused, then the service comes up on the same port: passes", async () => {
    const port = await freePort();
    let started: Promise<TestServer> | undefined;
    const r = await pollUntilHealthy(fast(`http://127.0.0.1:${port}`), {
      // Start the server during the first back-off, i.e. after attempt 1 was refused.
      sleep: async (ms) => {
        started ??= start(fakeProgressDb(), { port });
        await started;
        await new Promise((res) => setTimeout(res, ms));
      },
    });
    expect(started).toBeDefined();
    expect(r.status).toBe("healthy");
    expect(r.attempts).toBeGreaterThan(1);
  });

  it("accepts a leading v on either side of the version", async () => {
    const s = await start(fakeProgressDb({ version: "v0.2.0" }));
    await expect(pollUntilHealthy(fast(s.url, { expectedVersion: "0.2.0" }))).resolves.toMatchObject({ reportedVersion: "v0.2.0" });
  });

  it("follows a same-origin redirect (documented policy) and sends the extra headers", async () => {
    const inner = fakeProgressDb();
    const s = await start((req, res) => {
      if (req.headers["x-proxy-token"] !== "let-me-in") return json(res, 401, { error: "proxy auth" });
      if (!req.path.startsWith("/db/")) {
        res.writeHead(308, { Location: `/db${req.path}` }).end();
        return;
      }
      inner({ ...req, path: req.path.slice(3) }, res);
    });
    const r = await pollUntilHealthy(fast(s.url, { headers: { "X-Proxy-Token": "let-me-in" } }));
    expect(r.attempts).toBe(1);
    expect(s.requests.map((q) => q.path)).toEqual(["/healthz", "/db/healthz", "/readyz", "/db/readyz"]);
  });

  it("a base URL with a path prefix and a trailing slash is joined correctly", async () => {
    const inner = fakeProgressDb();
    const s = await start((req, res) => inner({ ...req, path: req.path.replace(/^\/pdb/, "") }, res));
    await pollUntilHealthy(fast(`${s.url}/pdb/`));
    expect(s.requests[0]?.path).toBe("/pdb/healthz");
  });
});

describe("pollUntilHealthy: failures are one readable message", () => {
  it("old version keeps answering: names the version it saw and says the old binary is running", async () => {
    const s = await start(fakeProgressDb({ version: "0.1.2" }));
    const msg = await failure(pollUntilHealthy(fast(s.url, { timeoutMs: 300 })));
    expect(msg).toContain(`health check of ${s.url} failed`);
    expect(msg).toContain("not healthy at version 0.2.0 after waiting");
    expect(msg).toMatch(/\d+ attempts/);
    expect(msg).toContain(`Last seen: GET ${s.url}/readyz answered 200: {"status":"ok","version":"0.1.2"}`);
    expect(msg).toContain("Likely cause: still answering 0.1.2: the old binary is running (expected 0.2.0)");
  });

  it("connection refused for the whole budget", async () => {
    const port = await freePort();
    const msg = await failure(pollUntilHealthy(fast(`http://127.0.0.1:${port}`, { timeoutMs: 200 })));
    expect(msg).toContain(`GET http://127.0.0.1:${port}/healthz failed`);
    expect(msg).toContain("ECONNREFUSED");
    expect(msg).toContain(`connection refused: the service is not listening on 127.0.0.1:${port}`);
  });

  it("a hanging request is cut by the per-request timeout and the poll carries on", async () => {
    let hung = 0;
    const inner = fakeProgressDb();
    const s = await start((req, res) => {
      if (req.path === "/healthz" && hung < 2) {
        hung++;
        return; // never answer
      }
      inner(req, res);
    });
    const t0 = Date.now();
    const r = await pollUntilHealthy(fast(s.url, { requestTimeoutMs: 150, timeoutMs: 3000 }));
    expect(r.attempts).toBe(3);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2 * 150);
    expect(Date.now() - t0).toBeLessThan(1500);
  });

  it("a service that always hangs fails with the timeout cause, within the total budget", async () => {
    const s = await start(() => undefined);
    const t0 = Date.now();
    const msg = await failure(pollUntilHealthy(fast(s.url, { requestTimeoutMs: 150, timeoutMs: 500, intervalMs: 50 })));
    const elapsed = Date.now() - t0;
    expect(msg).toContain("no response within 150 ms: the service is hung or overloaded");
    expect(elapsed).toBeGreaterThanOrEqual(500);
    expect(elapsed).toBeLessThan(500 + 50 + 150);
  });

  it("total timeout is respected within one interval", async () => {
    const s = await start((_req, res) => json(res, 503, { status: "unavailable" }));
    const t0 = Date.now();
    const msg = await failure(pollUntilHealthy(fast(s.url, { timeoutMs: 1000, intervalMs: 100 })));
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(1000);
    expect(elapsed).toBeLessThanOrEqual(1000 + 100 + 60); // one interval + scheduling noise
    expect(msg).toMatch(/after waiting 1\.[01]s \(timeout 1\.0s\)/);
    expect(msg).toContain("/healthz answered 503");
  });

  it("invalid JSON from /healthz", async () => {
    const s = await start((_req, res) => {
      res.writeHead(200, { "Content-Type": "text/html" }).end("<html>It works!</html>");
    });
    const msg = await failure(pollUntilHealthy(fast(s.url, { timeoutMs: 100 })));
    expect(msg).toContain("answered 200: <html>It works!</html>");
    expect(msg).toContain("/healthz answered 200 but not with JSON");
  });

  it("wrong status field in /healthz and in /readyz", async () => {
    const a = await start((_req, res) => json(res, 200, { status: "degraded" }));
    expect(await failure(pollUntilHealthy(fast(a.url, { timeoutMs: 100 })))).toContain('/healthz reports status "degraded", expected "ok"');
    const b = await start((req, res) =>
      req.path === "/healthz" ? json(res, 200, { status: "ok" }) : json(res, 200, { status: "migrating", version: "0.2.0" }),
    );
    expect(await failure(pollUntilHealthy(fast(b.url, { timeoutMs: 100 })))).toContain('/readyz reports status "migrating", expected "ok"');
  });

  it("/readyz missing (404): an old release without /readyz", async () => {
    const s = await start((req, res) => (req.path === "/healthz" ? json(res, 200, { status: "ok" }) : json(res, 404, "404 page not found")));
    expect(await failure(pollUntilHealthy(fast(s.url, { timeoutMs: 100 })))).toContain("no /readyz endpoint: a 0.1.x release (which has none");
  });

  it("/readyz of a 0.1.x (401 without a key): says so and points at versionProof host", async () => {
    const s = await start(fakeV1Api(API_KEY).handler);
    const msg = await failure(pollUntilHealthy(fast(s.url, { timeoutMs: 100 })));
    expect(msg).toContain(`Last seen: GET ${s.url}/readyz answered 401: unauthorized`);
    expect(msg).toContain('a 0.1.x version is proved with versionProof "host"');
  });

  it("a redirect to another origin is not followed: fails at once, nothing reaches the other host", async () => {
    const other = await start(fakeProgressDb());
    const s = await start((req, res) => {
      res.writeHead(302, { Location: `${other.url}${req.path}` }).end();
    });
    const t0 = Date.now();
    const msg = await failure(pollUntilHealthy(fast(s.url, { timeoutMs: 5000, headers: { Authorization: "Bearer proxy-secret-1" } })));
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(other.requests).toHaveLength(0);
    expect(msg).toContain(`redirects to another origin (${other.url}/healthz)`);
    expect(msg).toContain("1 attempt (not retried");
  });
});

describe("https", () => {
  let tls: SelfSignedCert;
  let otherCa: SelfSignedCert;
  beforeAll(() => {
    tls = selfSignedCert();
    otherCa = selfSignedCert();
  });

  it("passes with a self-signed certificate when caCertPem trusts it", async () => {
    const s = await start(fakeProgressDb(), { tls });
    expect(s.url.startsWith("https://")).toBe(true);
    const r = await pollUntilHealthy(fast(s.url, { caCertPem: tls.cert }));
    expect(r).toMatchObject({ status: "healthy", attempts: 1 });
  });

  it("fails fast when the certificate is not trusted (no caCertPem)", async () => {
    const s = await start(fakeProgressDb(), { tls });
    const t0 = Date.now();
    const msg = await failure(pollUntilHealthy(fast(s.url, { timeoutMs: 5000 })));
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(msg).toContain("TLS certificate not trusted (DEPTH_ZERO_SELF_SIGNED_CERT): set caCertPem");
    expect(s.requests).toHaveLength(0);
  });

  it("fails when caCertPem is a different certificate", async () => {
    const s = await start(fakeProgressDb(), { tls });
    const msg = await failure(pollUntilHealthy(fast(s.url, { caCertPem: otherCa.cert })));
    expect(msg).toContain("the configured caCertPem did not sign the instance's certificate");
  });

  it("https:// against a plain-http port says so", async () => {
    const s = await start(fakeProgressDb());
    const msg = await failure(pollUntilHealthy(fast(s.url.replace("http:", "https:"))));
    expect(msg).toContain("the port probably serves plain http; use an http:// url");
  });
});

describe("smoke test (frontend/v1 API with a backend key)", () => {
  it("creates a thread, posts a message, reads it back, deletes both", async () => {
    const api = fakeApi("0.2.0", API_KEY);
    const s = await start(api.handler);
    const r = await pollUntilHealthy(fast(s.url, { smokeTest: true, apiKey: API_KEY }));
    expect(r.smokeResult).toBe("passed");

    const calls = s.requests.filter((q) => q.path.startsWith("/frontend/")).map((q) => `${q.method} ${q.path}`);
    const t = [...api.threads.keys()][0];
    const m = [...api.messages.keys()][0];
    expect(t).toBeDefined();
    expect(m).toBeDefined();
    expect(calls).toEqual([
      "POST /frontend/v1/threads",
      `GET /frontend/v1/threads/${t}`, // the thread is applied before anything is posted into it
      `POST /frontend/v1/threads/${t}/messages`,
      `GET /frontend/v1/threads/${t}/messages`, // async write: not visible yet
      `GET /frontend/v1/threads/${t}/messages`,
      `DELETE /frontend/v1/threads/${t}/messages/${m}`,
      `DELETE /frontend/v1/threads/${t}`,
    ]);
    // Everything it created is gone.
    expect(api.threads.get(t!)?.deleted).toBe(true);
    expect(api.messages.get(m!)?.deleted).toBe(true);
    // Auth per openapi.yaml: backend key in X-API-Key + X-User-ID, no signature needed.
    for (const q of s.requests.filter((x) => x.path.startsWith("/frontend/"))) {
      expect(q.headers["x-api-key"]).toBe(API_KEY);
      expect(q.headers["x-user-id"]).toBe("progressdb-upgrades-smoke");
      expect(q.headers["x-user-signature"]).toBeUndefined();
    }
    // 0.2 rejects a body author from a backend key (400): the author travels as X-User-ID only.
    for (const q of s.requests.filter((x) => x.method === "POST")) expect(JSON.parse(q.body)).not.toHaveProperty("author");
    // The health endpoints never get the key.
    for (const q of s.requests.filter((x) => !x.path.startsWith("/frontend/"))) expect(q.headers["x-api-key"]).toBeUndefined();
  });

  it("a failing step is reported with the step, the response and the cleanup, and the key is scrubbed", async () => {
    const api = fakeApi("0.2.0", API_KEY, { method: "POST", pathPattern: /\/messages$/, status: 500 });
    const s = await start(api.handler);
    const msg = await failure(pollUntilHealthy(fast(s.url, { smokeTest: true, apiKey: API_KEY })));
    const t = [...api.threads.keys()][0]!;
    expect(msg).toContain(`healthy at 0.2.0, but the smoke test failed at step "post message": POST ${s.url}/frontend/v1/threads/${t}/messages answered 500`);
    expect(msg).toContain("the service failed the request (500)");
    expect(msg).toContain(`Cleanup: thread ${t} deleted.`);
    expect(api.threads.get(t)?.deleted).toBe(true);
    expect(msg).toContain("[redacted]"); // the server echoed the key back...
    expect(msg).not.toContain(API_KEY); // ...and it did not get through
  });

  it("a write that is accepted but never readable fails at the read-back step, and still cleans up", async () => {
    const api = fakeApi("0.2.0", API_KEY, undefined, true);
    const s = await start(api.handler);
    const msg = await failure(pollUntilHealthy(fast(s.url, { smokeTest: true, apiKey: API_KEY, smokeTimeoutMs: 300 })));
    const t = [...api.threads.keys()][0]!;
    expect(msg).toContain('smoke test failed at step "read message back"');
    expect(msg).toContain("the posted message never appeared in the thread");
    expect(msg).toContain(`Cleanup: thread ${t} deleted.`);
    expect(api.threads.get(t)?.deleted).toBe(true);
    expect(s.requests.filter((q) => q.method === "GET" && q.path.endsWith("/messages")).length).toBeGreaterThan(2);
  });

  it("a rejected key says it must be a backend key", async () => {
    const api = fakeApi("0.2.0", "sk_the_real_key_999");
    const s = await start(api.handler);
    const msg = await failure(pollUntilHealthy(fast(s.url, { smokeTest: true, apiKey: "pk_frontend_key_1" })));
    expect(msg).toContain('step "create thread"');
    expect(msg).toContain("the API key was rejected (401): apiKey must be a backend key");
    expect(msg).not.toContain("pk_frontend_key_1");
  });

  it("is off by default: no API calls", async () => {
    const api = fakeApi("0.2.0", API_KEY);
    const s = await start(api.handler);
    await pollUntilHealthy(fast(s.url, { apiKey: API_KEY }));
    expect(s.requests.filter((q) => q.path.startsWith("/frontend/"))).toHaveLength(0);
  });
});

describe("versionProof host (0.1.x: no /readyz, version proved on the host)", () => {
  const HOST_PROOF = "pid 4242 listening on 127.0.0.1:18080 runs /opt/progressdb/releases/0.1.2/progressdb (sha256 ab12…, equal to the verified archive's)";

  it("passes when /healthz is ok and /readyz is not a 200; reports the expected version and the proof", async () => {
    const s = await start(fakeV1Api(API_KEY).handler);
    const r = await pollUntilHealthy(fast(s.url, { expectedVersion: "0.1.2", versionProof: "host", hostProof: HOST_PROOF }));
    expect(r).toMatchObject({ status: "healthy", reportedVersion: "0.1.2", versionProof: `host: ${HOST_PROOF}`, attempts: 1 });
    expect(s.requests.map((q) => q.path)).toEqual(["/healthz", "/readyz"]);
    // 404 (a key added by a proxy) is a 0.1.x answer too.
    const keyed = await start((req, res) => (req.path === "/healthz" ? json(res, 200, { status: "ok" }) : json(res, 404, "404 page not found")));
    await expect(pollUntilHealthy(fast(keyed.url, { expectedVersion: "0.1.2", versionProof: "host", hostProof: HOST_PROOF }))).resolves.toMatchObject({ status: "healthy" });
  });

  it("a /readyz that answers 200 with a version: a 0.2-family process, named", async () => {
    const s = await start(fakeProgressDb({ version: "v0.2.1" }));
    const msg = await failure(pollUntilHealthy(fast(s.url, { expectedVersion: "0.1.2", versionProof: "host", hostProof: HOST_PROOF, timeoutMs: 200 })));
    expect(msg).toContain("not healthy at version 0.1.2");
    expect(msg).toContain("a 0.2-family process (v0.2.1) is answering where 0.1.2 (0.1.x, which has no /readyz) was expected");
  });

  it("an empty hostProof fails at once, without a request", async () => {
    const s = await start(fakeV1Api(API_KEY).handler);
    const msg = await failure(pollUntilHealthy(fast(s.url, { expectedVersion: "0.1.2", versionProof: "host", hostProof: "  " })));
    expect(msg).toContain('versionProof is "host" but hostProof is empty');
    expect(s.requests).toHaveLength(0);
  });

  it("/healthz must still be ok", async () => {
    const s = await start((_req, res) => json(res, 503, { status: "starting" }));
    const msg = await failure(pollUntilHealthy(fast(s.url, { expectedVersion: "0.1.2", versionProof: "host", hostProof: HOST_PROOF, timeoutMs: 100 })));
    expect(msg).toContain("/healthz answered 503");
  });
});

describe("smoke test (v1 API of 0.1.x)", () => {
  it("creates a thread, posts a message, reads it back, deletes both — author in the body or ?author=", async () => {
    const api = fakeV1Api(API_KEY);
    const s = await start(api.handler);
    const r = await pollUntilHealthy(fast(s.url, { expectedVersion: "0.1.2", versionProof: "host", hostProof: "proof", dialect: "v1", smokeTest: true, apiKey: API_KEY }));
    expect(r.smokeResult).toBe("passed");
    const t = [...api.threads.keys()][0]!;
    const m = [...api.messages.keys()][0]!;
    const calls = s.requests.filter((q) => q.path.startsWith("/v1/")).map((q) => `${q.method} ${q.path}`);
    expect(calls).toEqual([
      "POST /v1/threads",
      `POST /v1/threads/${t}/messages`,
      `GET /v1/threads/${t}/messages?author=progressdb-upgrades-smoke`,
      `DELETE /v1/threads/${t}/messages/${m}?author=progressdb-upgrades-smoke`,
      `DELETE /v1/threads/${t}?author=progressdb-upgrades-smoke`,
    ]);
    expect(JSON.parse(s.requests.find((q) => q.path === "/v1/threads")!.body)).toMatchObject({ author: "progressdb-upgrades-smoke" });
    // 0.1.x deletes are soft: both are marked deleted.
    expect(api.threads.get(t)?.deleted).toBe(true);
    expect(api.messages.get(m)?.deleted).toBe(true);
  });

  it("the frontend-v1 smoke test against a 0.1.x says which API it expected", async () => {
    const s = await start(fakeV1Api(API_KEY).handler);
    const msg = await failure(pollUntilHealthy(fast(s.url, { expectedVersion: "0.1.2", versionProof: "host", hostProof: "proof", smokeTest: true, apiKey: API_KEY })));
    expect(msg).toContain('smoke test failed at step "create thread": POST');
    expect(msg).toContain('this instance does not serve the 0.2.x /frontend/v1 API (dialect "frontend-v1")');
  });
});

describe("secrets never leak", () => {
  it("an auth header echoed by the service is scrubbed from the failure", async () => {
    const s = await start((req, res) => json(res, 503, { status: "starting", echo: req.headers }));
    const msg = await failure(pollUntilHealthy(fast(s.url, { timeoutMs: 100, headers: { Authorization: "Bearer tok-abcdef-123" } })));
    expect(msg).toContain("[redacted]");
    expect(msg).not.toContain("tok-abcdef-123");
  });

  it("provider create/update: outputs hold no API key; failures carry no API key", async () => {
    const api = fakeApi("0.2.0", API_KEY);
    const s = await start(api.handler);
    const inputs = {
      url: s.url,
      expectedVersion: "0.2.0",
      deploymentId: "dep-1",
      timeoutSeconds: 2,
      intervalSeconds: 0.02,
      requestTimeoutSeconds: 0.5,
      smokeTest: true,
      apiKey: API_KEY,
      providerVersion: HEALTH_PROVIDER_VERSION,
    };
    const created = await healthProvider.create(inputs);
    expect(created.outs).toMatchObject({ status: "healthy", reportedVersion: "0.2.0", attempts: 1, smokeResult: "passed", deploymentId: "dep-1" });
    expect(JSON.stringify(created)).not.toContain(API_KEY);
    expect(created.outs).not.toHaveProperty("apiKey");

    // A server that echoes the key in every API error and never gets ready at the right version.
    const bad = await start(fakeApi("0.2.0", API_KEY, { method: "POST", pathPattern: /threads$/, status: 400 }).handler);
    const msg = await failure(Promise.resolve(healthProvider.update!("id", created.outs, { ...inputs, url: bad.url })));
    expect(msg).toContain('step "create thread"');
    expect(msg).not.toContain(API_KEY);
  });

  it("scrubSecrets covers raw, URL-encoded and JSON-escaped forms", () => {
    const key = 'k/ey+"x"=1';
    const text = `a ${key} b ${encodeURIComponent(key)} c ${JSON.stringify(key)}`;
    const out = scrubSecrets(text, [key]);
    expect(out).not.toContain(key);
    expect(out).not.toContain(encodeURIComponent(key));
    expect(out).not.toContain(JSON.stringify(key).slice(1, -1));
  });
});

describe("backoff", () => {
  it("doubles from the interval up to the cap, with jitter in [ceiling/2, ceiling]", () => {
    const lo = (n: number) => backoffDelayMs(n, 100, 400, () => 0);
    const hi = (n: number) => backoffDelayMs(n, 100, 400, () => 1);
    expect([1, 2, 3, 4, 10].map(lo)).toEqual([50, 100, 200, 200, 200]);
    expect([1, 2, 3, 4, 10].map(hi)).toEqual([100, 200, 400, 400, 400]);
    expect(backoffDelayMs(2, 100, 400, () => 0.5)).toBe(150);
  });

  it("the poll sleeps the backoff delays, clamped to the time left", async () => {
    const s = await start((_req, res) => json(res, 503, {}));
    const slept: number[] = [];
    let clock = 0;
    await failure(
      runHealthCheck(fast(s.url, { timeoutMs: 1000, intervalMs: 100 }), {
        now: () => clock,
        random: () => 1,
        sleep: async (ms) => {
          slept.push(ms);
          clock += ms;
        },
      }).then((o) => (o.ok ? o : Promise.reject(new Error(o.message)))),
    );
    // ceilings 100, 200, 400 (cap 4 × interval) … then clamped to what is left of 1000 ms.
    expect(slept).toEqual([100, 200, 400, 300]);
  });
});

describe("provider contract (pure parts)", () => {
  const base = { url: "http://10.0.0.5:8080", expectedVersion: "0.2.0", deploymentId: "d1", providerVersion: HEALTH_PROVIDER_VERSION };
  const state = { ...base, timeoutSeconds: 120, intervalSeconds: 2, requestTimeoutSeconds: 5, smokeTest: false, status: "healthy", attempts: 3 };

  it("diff: same inputs → no change", () => {
    expect(diffInputs(state, { ...base, timeoutSeconds: 120, intervalSeconds: 2, requestTimeoutSeconds: 5, smokeTest: false })).toEqual({
      changes: false,
      replaces: [],
      deleteBeforeReplace: false,
    });
  });

  it("diff: version, deployment id and url replace", () => {
    expect(diffInputs(state, { ...base, expectedVersion: "0.2.1" }).replaces).toEqual(["expectedVersion"]);
    expect(diffInputs(state, { ...base, deploymentId: "d2" }).replaces).toEqual(["deploymentId"]);
    expect(diffInputs(state, { ...base, url: "http://10.0.0.6:8080" }).replaces).toEqual(["url"]);
  });

  it("diff: a bumped providerVersion or another setting updates (re-checks) in place", () => {
    expect(diffInputs(state, { ...base, providerVersion: "999" })).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
    expect(diffInputs(state, { ...base, timeoutSeconds: 60 })).toMatchObject({ changes: true, replaces: [] });
    expect(diffInputs(state, { ...base, headers: { A: "b" } })).toMatchObject({ changes: true, replaces: [] });
  });

  it("diff: a state that refresh found unhealthy is re-checked on the next up", () => {
    expect(diffInputs({ ...state, status: "unhealthy" }, base)).toMatchObject({ changes: true, replaces: [] });
  });

  it("check: names the field and the fix; preview unknowns pass", () => {
    const props = (f: { property: string }[]) => f.map((x) => x.property);
    expect(validateInputs(base)).toEqual([]);
    expect(props(validateInputs({ ...base, url: "10.0.0.5:8080" }))).toEqual(["url"]);
    expect(validateInputs({ ...base, url: "http://h:8080/healthz" })[0]?.reason).toContain("without /healthz");
    expect(props(validateInputs({ ...base, timeoutSeconds: 0, intervalSeconds: -1 }))).toEqual(["timeoutSeconds", "intervalSeconds"]);
    expect(validateInputs({ ...base, smokeTest: true })[0]).toMatchObject({ property: "apiKey" });
    expect(props(validateInputs({ ...base, caCertPem: "not a pem" }))).toEqual(["caCertPem"]);
    expect(props(validateInputs({ ...base, headers: { "Bad Name": "x" } }))).toEqual(["headers"]);
    const unknown = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
    expect(validateInputs({ ...base, url: unknown, deploymentId: unknown })).toEqual([]);
  });

  it("check: the version proof, the dialect and the continuity keys", () => {
    const props = (f: { property: string }[]) => f.map((x) => x.property);
    const unknown = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
    expect(props(validateInputs({ ...base, versionProofMode: "banner" }))).toEqual(["versionProof"]);
    expect(validateInputs({ ...base, versionProofMode: "host" })[0]).toMatchObject({ property: "hostProof" });
    expect(validateInputs({ ...base, versionProofMode: "host", hostProof: "pid 1 runs …" })).toEqual([]);
    // At preview the proof is not known yet (the install step prints it).
    expect(validateInputs({ ...base, versionProofMode: "host", hostProof: unknown })).toEqual([]);
    expect(props(validateInputs({ ...base, dialect: "v2" }))).toEqual(["dialect"]);
    expect(props(validateInputs({ ...base, dialect: "frontend-v1", dataContinuity: true }))).toEqual(["adminApiKey"]);
    expect(validateInputs({ ...base, dialect: "v1", dataContinuity: true, apiKey: "k" })).toEqual([]);
    expect(props(validateInputs({ ...base, baseline: "not a sample" }))).toEqual(["baseline"]);
  });

  it("diff: proof, dialect, baseline changes re-check in place; a baseline is compared as data (key order ignored)", () => {
    const b = { available: true, reason: "", threads: [{ ref: "#1", digest: "d" }] };
    const withB = { ...state, dialect: "v1", versionProofMode: "host", hostProof: "p1", baseline: b };
    expect(diffInputs(withB, { ...base, dialect: "v1", versionProofMode: "host", hostProof: "p1", baseline: { threads: [{ digest: "d", ref: "#1" }], reason: "", available: true } }).changes).toBe(false);
    expect(diffInputs(withB, { ...base, dialect: "v1", versionProofMode: "host", hostProof: "p2", baseline: b })).toMatchObject({ changes: true, replaces: [] });
    expect(diffInputs(withB, { ...base, dialect: "frontend-v1", versionProofMode: "host", hostProof: "p1", baseline: b })).toMatchObject({ changes: true, replaces: [] });
    expect(diffInputs(withB, { ...base, dialect: "v1", versionProofMode: "host", hostProof: "p1", baseline: { ...b, reason: "x" } })).toMatchObject({ changes: true, replaces: [] });
  });
});

describe("provider outputs: runId, versionProof, continuity", () => {
  it("runId is fresh on create and on update, kept by refresh; no key in any output", async () => {
    const api = fakeApi("v0.2.1", API_KEY);
    const s = await start(api.handler);
    const inputs = { url: s.url, expectedVersion: "0.2.1", deploymentId: "d1", versionProofMode: "readyz", dialect: "frontend-v1", intervalSeconds: 0.02, apiKey: API_KEY, adminApiKey: "ak_admin_key_0001" };
    const created = await healthProvider.create(inputs);
    expect(created.outs).toMatchObject({
      status: "healthy",
      reportedVersion: "v0.2.1",
      versionProof: 'readyz reported "v0.2.1"',
      continuity: "skipped: no baseline sample",
      continuityMessage: "",
      versionProofMode: "readyz",
    });
    expect(created.outs["runId"]).toMatch(/^[0-9a-f-]{36}$/);
    const read = await healthProvider.read!(created.id, created.outs);
    expect(read.props?.["runId"]).toBe(created.outs["runId"]);
    const updated = await healthProvider.update!(created.id, created.outs, { ...inputs, timeoutSeconds: 30 });
    expect(updated.outs?.["runId"]).toMatch(/^[0-9a-f-]{36}$/);
    expect(updated.outs?.["runId"]).not.toBe(created.outs["runId"]);
    expect(JSON.stringify([created, read, updated])).not.toMatch(/ak_admin_key_0001|sk_test_0123456789abcdef/);
  });

  it("update: an unchanged baseline that passed is not compared again; a new one is", async () => {
    const api = fakeApi("v0.2.1", API_KEY, undefined, false, "ak_admin_key_0001");
    const s = await start(api.handler);
    const baseline = { available: true, reason: "", dialect: "v1", servedVersion: "", takenAt: "", salt: "s", stats: { threads: 1, messages: 1 }, threadsListed: 1, threads: [] };
    const inputs = { url: s.url, expectedVersion: "0.2.1", deploymentId: "d1", dialect: "frontend-v1", intervalSeconds: 0.02, apiKey: API_KEY, adminApiKey: "ak_admin_key_0001", baseline, baselineVersion: "0.1.2" };
    const created = await healthProvider.create(inputs);
    // The fake serves 0 threads where the baseline had 1.
    expect(created.outs).toMatchObject({ status: "healthy", continuity: "failed", continuityMessage: "0.2.1 serves 0 threads where 0.1.2 served 1: data missing" });
    // A failed gate is compared again on update.
    const again = await healthProvider.update!(created.id, created.outs, inputs);
    expect(again.outs).toMatchObject({ continuity: "failed" });
    const adminReads = s.requests.filter((q) => q.path === "/admin/stats").length;
    // Passed once: not compared again while the baseline stays the same.
    const passed = { ...created.outs, continuity: "passed", continuityMessage: "" };
    const kept = await healthProvider.update!(created.id, passed, { ...inputs, timeoutSeconds: 30 });
    expect(kept.outs).toMatchObject({ continuity: "passed", continuityMessage: "" });
    expect(s.requests.filter((q) => q.path === "/admin/stats").length).toBe(adminReads);
    const fresh = await healthProvider.update!(created.id, passed, { ...inputs, baseline: { ...baseline, salt: "t" } });
    expect(fresh.outs).toMatchObject({ continuity: "failed" });
  });

  it("versionProof host: the proof is the output; refresh of a 0.1.x keeps the state", async () => {
    const s = await start(fakeV1Api(API_KEY).handler);
    const inputs = { url: s.url, expectedVersion: "0.1.2", deploymentId: "d1", versionProofMode: "host", hostProof: "pid 7 runs the 0.1.2 binary", dialect: "v1", intervalSeconds: 0.02 };
    const created = await healthProvider.create(inputs);
    expect(created.outs).toMatchObject({ status: "healthy", reportedVersion: "0.1.2", versionProof: "host: pid 7 runs the 0.1.2 binary", versionProofMode: "host" });
    const read = await healthProvider.read!(created.id, created.outs);
    expect(read.props).toEqual(created.outs);
    expect(diffInputs(read.props!, read.inputs!).changes).toBe(false);
  });
});

describe("provider read (pulumi refresh)", () => {
  it("healthy: returns the state unchanged (no spurious diff) and the inputs", async () => {
    const s = await start(fakeProgressDb());
    const created = await healthProvider.create({ url: s.url, expectedVersion: "0.2.0", deploymentId: "d1", intervalSeconds: 0.02, providerVersion: "x" });
    const read = await healthProvider.read!(created.id, created.outs);
    expect(read.props).toEqual(created.outs);
    expect(read.inputs).toEqual({ url: s.url, expectedVersion: "0.2.0", deploymentId: "d1", intervalSeconds: 0.02, providerVersion: "x" });
    expect(diffInputs(read.props!, read.inputs!).changes).toBe(false);
  });

  it("now answering another version: status unhealthy, reportedVersion and message say why", async () => {
    const s = await start(fakeProgressDb());
    const created = await healthProvider.create({ url: s.url, expectedVersion: "0.2.0", deploymentId: "d1", intervalSeconds: 0.02, timeoutSeconds: 0.2 });
    await s.close();
    const old = await start(fakeProgressDb({ version: "0.1.2" }), { port: s.port });
    const read = await healthProvider.read!(created.id, created.outs);
    expect(read.props).toMatchObject({ status: "unhealthy", reportedVersion: "0.1.2", attempts: 1 });
    expect(String(read.props?.message)).toContain("still answering 0.1.2: the old binary is running");
    expect(old.requests.length).toBeGreaterThan(0);
    expect(diffInputs(read.props!, read.inputs!).changes).toBe(true);
  });

  it("a service that is down: unhealthy, with the cause", async () => {
    const s = await start(fakeProgressDb());
    const created = await healthProvider.create({ url: s.url, expectedVersion: "0.2.0", deploymentId: "d1", intervalSeconds: 0.02, timeoutSeconds: 0.2 });
    await s.close();
    const read = await healthProvider.read!(created.id, created.outs);
    expect(read.props).toMatchObject({ status: "unhealthy", reportedVersion: "0.2.0", runId: created.outs["runId"] });
    expect(String(read.props?.message)).toContain("connection refused");
  });
});
