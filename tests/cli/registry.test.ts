import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkName, parseVolumeRef, Registry, type PoolRecord } from '../../src/host/registry.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('registry');
afterAll(() => scratch.cleanup());
let n = 0;
const freshHome = (): string => path.join(scratch.dir, `home${n++}`);

const fileRecord = (name: string, file: string): PoolRecord => ({ name, backing: { kind: 'file', path: file }, created: '2026-01-01T00:00:00.000Z' });

describe('pool registry', () => {
  it('accepts names of letters, digits, dot, dash and underscore, and nothing that could become a path', () => {
    for (const ok of ['pool0', 'a', 'vm-1.disk_2', 'A'.repeat(64)]) expect(checkName('pool', ok)).toBe(ok);
    for (const bad of ['', '.', '..', '.hidden', '-x', 'a/b', '../etc', 'a b', 'a\0b', 'é', 'A'.repeat(65), 'x@y']) {
      expect(() => checkName('pool', bad)).toThrowError(`invalid pool name '${bad}'`);
    }
  });

  it('splits POOL/VOL and names the part that is wrong', () => {
    expect(parseVolumeRef('pool0/vm1')).toEqual({ pool: 'pool0', volume: 'vm1' });
    expect(() => parseVolumeRef('pool0')).toThrowError(/expected POOL\/VOL/);
    expect(() => parseVolumeRef('a/b/c')).toThrowError(/expected POOL\/VOL/);
    expect(() => parseVolumeRef('p/v@snap')).toThrowError(/names a snapshot/);
    expect(() => parseVolumeRef('p/..')).toThrowError(/invalid volume name '\.\.'/);
    expect(() => parseVolumeRef('../v')).toThrowError(/invalid pool name '\.\.'/);
  });

  it('an empty or missing home has no pools; an unknown pool is named with the home', () => {
    const reg = new Registry(freshHome());
    expect(reg.names()).toEqual([]);
    expect(reg.readable()).toEqual([]);
    expect(() => reg.get('p9')).toThrowError(`pool 'p9' not found in ${reg.home}`);
  });

  it('stores pool files inside the home relative to it, others absolute, and gives them back absolute', () => {
    const home = freshHome();
    const reg = new Registry(home);
    reg.add(fileRecord('inside', reg.defaultPoolPath('inside')));
    reg.add(fileRecord('outside', '/var/tmp/elsewhere.pool'));
    const raw = JSON.parse(fs.readFileSync(path.join(home, 'pools', 'inside.json'), 'utf8')) as { backing: { path: string } };
    expect(raw.backing.path).toBe('inside.pool');
    expect(reg.filePath(reg.get('inside'))).toBe(path.resolve(home, 'inside.pool'));
    expect(reg.filePath(reg.get('outside'))).toBe('/var/tmp/elsewhere.pool');
    expect(reg.names()).toEqual(['inside', 'outside']);
    // The home moves; pools inside it move with it.
    const moved = freshHome();
    fs.renameSync(home, moved);
    expect(new Registry(moved).filePath(new Registry(moved).get('inside'))).toBe(path.resolve(moved, 'inside.pool'));
  });

  it('holds RAID records as well as files', () => {
    const reg = new Registry(freshHome());
    const record: PoolRecord = { name: 'r5', backing: { kind: 'raid', level: '5', members: ['/d/a', '/d/b', '/d/c'], chunk: 65536 }, created: 'x' };
    reg.add(record);
    expect(reg.get('r5')).toEqual(record);
  });

  it('refuses a second registration of one name and leaves no temporary files', () => {
    const home = freshHome();
    const reg = new Registry(home);
    reg.add(fileRecord('p0', '/a.pool'));
    expect(() => reg.add(fileRecord('p0', '/b.pool'))).toThrowError(`pool 'p0' already exists in ${home}`);
    expect(reg.filePath(reg.get('p0'))).toBe('/a.pool');
    expect(fs.readdirSync(path.join(home, 'pools'))).toEqual(['p0.json']);
    reg.remove('p0');
    expect(reg.has('p0')).toBe(false);
  });

  it('reports a damaged registration by pool and file, never trusting its contents', () => {
    const home = freshHome();
    const reg = new Registry(home);
    reg.add(fileRecord('p0', '/a.pool'));
    const file = path.join(home, 'pools', 'p0.json');
    const damage = (text: string): void => fs.writeFileSync(file, text);
    damage('{not json');
    expect(() => reg.get('p0')).toThrowError(/pool 'p0': registration .*p0.json is damaged \(not JSON\)/);
    expect(reg.names()).toEqual(['p0']);
    expect(reg.readable()).toEqual([]);
    damage(JSON.stringify({ version: 1, name: 'other', backing: { kind: 'file', path: '/a' } }));
    expect(() => reg.get('p0')).toThrowError(/names 'other'/);
    damage(JSON.stringify({ version: 1, name: 'p0', backing: { kind: 'raid', level: '4', members: [], chunk: 1 } }));
    expect(() => reg.get('p0')).toThrowError(/no valid backing/);
    damage(JSON.stringify({ version: 2, name: 'p0', backing: { kind: 'file', path: '/a' } }));
    expect(() => reg.get('p0')).toThrowError(/unknown version 2/);
  });

  it('replaces a RAID record whole (member paths inside the home stored relative), leaves no temporary file, and refuses a pool that is not registered', () => {
    const home = freshHome();
    const reg = new Registry(home);
    const before: PoolRecord = { name: 'r6', backing: { kind: 'raid', level: '6', members: ['m/a', 'm/b', 'm/c', 'm/d'], chunk: 65536 }, created: 'then' };
    reg.add(before);
    const after: PoolRecord = { ...before, backing: { kind: 'raid', level: '6', members: [path.join(home, 'm/a'), path.join(home, 'm/new'), 'm/c', '/elsewhere/d'], chunk: 65536 } };
    reg.replace(after);
    expect(reg.get('r6')).toEqual({ ...before, backing: { ...before.backing, members: ['m/a', 'm/new', 'm/c', '/elsewhere/d'] } });
    expect(reg.memberPaths(reg.get('r6'))).toEqual([path.join(home, 'm/a'), path.join(home, 'm/new'), path.join(home, 'm/c'), '/elsewhere/d']);
    expect(fs.readdirSync(path.join(home, 'pools'))).toEqual(['r6.json']);
    expect(() => reg.replace({ ...after, name: 'gone' })).toThrowError(`pool 'gone' not found in ${home}`);
    expect(reg.has('gone')).toBe(false);
  });

  it('ignores stray files in the registry folder', () => {
    const home = freshHome();
    const reg = new Registry(home);
    reg.add(fileRecord('p0', '/a.pool'));
    fs.writeFileSync(path.join(home, 'pools', '.p1.123.tmp'), '{}');
    fs.writeFileSync(path.join(home, 'pools', 'notes.txt'), 'hello');
    expect(reg.names()).toEqual(['p0']);
  });
});
