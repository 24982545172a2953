// Pure logic of the HealthCheck and DataSnapshot dynamic providers.
//
//   http.ts        one request function (http/https), redirect policy, error
//                  diagnosis, API calls with the 429 back-off, text helpers
//   poll.ts        the health poll: /healthz, the version proof (/readyz, or
//                  the host's proof for 0.1.x), then smoke test and continuity
//   smoke.ts       the API smoke test per dialect (0.1.x v1, 0.2.x frontend/v1)
//   continuity.ts  data samples as digests, the dialect clients that read them,
//                  the comparison, and the continuity gate
//   snapshot.ts    the DataSnapshot's reading and its provider helpers
//   inputs.ts      the HealthCheck provider's check/diff/outputs helpers
//
// These files are serialized INTO the provider closures
// (pulumi.runtime.serializeFunction walks every function a provider calls,
// across these modules). Rules:
//   - import only from one another, or types (`import type`, `typeof
//     import(...)`, erased). Never an npm package nor a node: module: node
//     built-ins are reached with process.getBuiltinModule (Node >= 20.16);
//   - only globals otherwise: URL, setTimeout, Buffer, JSON, Date, Math, crypto;
//   - no exported `const`s used inside functions (TypeScript compiles those to
//     `exports.X`), no classes; defaults live inside the functions that use them.
// tests/health/serialize.test.ts serializes both providers and runs them in a
// fresh node process, so a break of these rules fails a test.

export * from "./continuity";
export * from "./http";
export * from "./inputs";
export * from "./poll";
export * from "./probe";
export * from "./smoke";
export * from "./snapshot";
