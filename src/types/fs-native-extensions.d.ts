// The package ships no declarations; these cover the calls Strata makes.
declare module 'fs-native-extensions' {
  export function tryLock(fd: number, offset?: number, length?: number, opts?: { shared?: boolean }): boolean;
  export function waitForLockSync(fd: number, offset?: number, length?: number, opts?: { shared?: boolean }): void;
  export function unlock(fd: number, offset?: number, length?: number): void;
  export function trim(fd: number, offset: number, length: number): Promise<void>;
  export function trimSync(fd: number, offset: number, length: number): void;
}
