import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    globalSetup: ['./tests/support/ceph-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: interop tests start servers and clients, so files run two at a time at most.
    maxWorkers: 2,
    reporters: ['default', './tests/support/summary-reporter.ts'],
  },
});
