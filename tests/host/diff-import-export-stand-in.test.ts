import { vi } from 'vitest';
import { diffScenarios } from './diff-scenarios.js';

// The stand-in also fails on purpose (a snapshot that cannot be made), which the pool's operations cannot be asked to.
vi.mock('../../src/snapshot/index.js', async () => await import('../support/fake-chains.js'));

diffScenarios('stand-in');
