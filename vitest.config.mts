import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    // Integration and e2e suites start real servers and the real engine on a
    // 2-core machine: one file at a time keeps their timings honest.
    fileParallelism: false,
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 300_000,
    // Under Pulumi mocks a program that fails by design (the downgrade guard)
    // leaves its dependent outputs rejected with the guard's message, exactly as
    // the engine would report it. Those are expected; any other error still fails the run.
    onUnhandledError(error) {
      return !String((error as Error)?.message ?? error).includes("is lower than the deployed");
    },
  },
});
