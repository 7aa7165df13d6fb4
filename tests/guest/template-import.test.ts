import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createPoolVolume, strataCli } from '../../bench/nbd-servers.js';
import { poolDisk } from '../support/guest-disk.js';
import { expectGuestOk, expectPoolClean, expectStrataExit, withServer } from '../support/guest-expect.js';
import { GUEST_FILES, GUEST_TOOLS, missingTools } from '../support/guest-tools.js';
import { guestSuite, guestToolsSkip } from '../support/guest-suite.js';
import { tarOva, writeOvfDir, type VmSpec } from '../support/template-packages.js';

/**
 * A guest boots from a clone of an imported template: an ext4 disk holding
 * the files the guest tests write (made by the host's mke2fs -d), put into
 * an OVA the way other platforms ship them (a streamOptimized VMDK by qemu-img, the manifest by
 * sha256sum, tar), `strata template import` brings it into another pool,
 * `strata clone` makes a linked clone of the template, and the guest boots
 * on the clone's export and verifies every file.
 */
const DISK_BYTES = 256 * 1024 * 1024;
const TEST_TIMEOUT_MS = 240_000;

const missing = missingTools([...GUEST_TOOLS, 'qemu-img', 'tar', 'sha256sum'], GUEST_FILES);
const skip = guestToolsSkip(missing, 'template guest test');

describe.skipIf(skip)('a guest on a clone of an imported template', () => {
  const suite = guestSuite('guest-tmpl', missing);

  it('boots from the clone of a template imported from an OVA and verifies every file on it', async () => {
    const guest = suite.guest();
    const cli = (home: string, ...args: string[]): string => execFileSync(process.execPath, [strataCli(), '--home', home, ...args], { encoding: 'utf8' });

    // The guest's disk as another platform had it: the payload the guest writes, put into ext4 by the host's mke2fs.
    const tree = path.join(suite.dir, 'tree');
    guest.payloadTree(tree);
    const raw = path.join(suite.dir, 'golden.raw');
    execFileSync('/sbin/mke2fs', ['-q', '-F', '-t', 'ext4', '-d', tree, raw, `${DISK_BYTES / 1024}k`], { stdio: 'pipe' });
    fs.rmSync(tree, { recursive: true });

    const pkg = path.join(suite.dir, 'pkg');
    fs.mkdirSync(pkg);
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, path.join(pkg, 'disk1.vmdk')]);
    fs.rmSync(raw);
    const vm: VmSpec = { name: 'linux', cpus: 1, memoryMiB: 256, network: 'VM Network', disks: [{ href: 'disk1.vmdk', capacity: DISK_BYTES, format: 'vmdk-stream' }] };
    writeOvfDir(pkg, vm);
    const ova = path.join(suite.dir, 'linux.ova');
    tarOva(pkg, vm, ova);

    // Another pool: the template comes in, a linked clone of it is the guest's disk.
    const target = { home: path.join(suite.dir, 'target-home'), pool: 'pool', volume: 'guest' };
    createPoolVolume({ ...target, volume: 'scratch' }, 1 << 20, 2 * DISK_BYTES);
    cli(target.home, 'template', 'import', ova, 'pool/linux');
    expect(cli(target.home, 'clone', 'pool/linux', 'pool/guest')).toMatch(/linked/);
    const disk = poolDisk(target);
    const verify = await withServer(disk, (uri) => guest.verify(uri, 'none'));
    expectGuestOk(verify.result, 'verify', guest.fileCount);
    expectStrataExit(verify.exit);
    expect(verify.result.sums).toEqual(guest.expected);
    expectPoolClean(disk);
  }, TEST_TIMEOUT_MS);
});
