import { diffScenarios } from './diff-scenarios.js';

diffScenarios('chains');
