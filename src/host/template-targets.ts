import type { BlockDevice } from '../blockdev/index.js';
import type { Pool } from '../qcowlike/index.js';
import type { TemplateInfo } from '../snapshot/index.js';
import { runAdmin, type AdminContext } from './admin.js';
import type { ControlClient } from './control-client.js';
import type { TemplateTarget } from './template-import.js';

/**
 * A pool this process holds: volumes are created marked incomplete (a kill
 * or a crash midway leaves them saying so, and nothing exports them) and
 * made templates by the same verb `template create` runs.
 */
export function poolTarget(pool: Pool, ctx: AdminContext): TemplateTarget {
  return {
    exists: async (name) => {
      const vol = pool.catalogNow.volumes.find((v) => v.name === name);
      if (vol) return vol.incomplete === true ? 'incomplete' : 'yes';
      return pool.catalogNow.templates.some((t) => t.name === name) ? 'yes' : 'no';
    },
    create: async (name, size) => {
      await pool.createVolume(name, size, { incomplete: true });
      return pool.openVolume(name);
    },
    complete: async (name, device) => {
      // One commit makes the data durable and clears the mark.
      await pool.completeVolume(name);
      await device.close();
    },
    makeTemplate: (name, settings) => runAdmin(pool, { op: 'template-create', volume: name, ...(settings ? { settings } : {}) }, ctx),
    removeVolume: async (name) => {
      await pool.deleteVolume(name).catch(() => undefined);
    },
    removeTemplate: async (name) => {
      await runAdmin(pool, { op: 'template-delete', template: name }, ctx).catch(() => undefined);
    },
  };
}

/**
 * A pool that `strata serve` holds: volumes are made and removed over its
 * control socket and written over the server's NBD export of them, as
 * `strata import` does. Such a volume is not marked incomplete (the server
 * would not export it): if this process is killed midway, the volume stays
 * and must be deleted.
 */
export function servedTarget(control: ControlClient, connect: (volume: string) => Promise<BlockDevice>): TemplateTarget {
  return {
    exists: async (name) => {
      const vol = ((await control.request({ op: 'volume-list' })).result as Array<{ name: string; incomplete?: boolean }>).find((v) => v.name === name);
      if (vol) return vol.incomplete === true ? 'incomplete' : 'yes';
      return ((await control.request({ op: 'template-list' })).result as TemplateInfo[]).some((t) => t.name === name) ? 'yes' : 'no';
    },
    create: async (name, size) => {
      await control.request({ op: 'volume-create', volume: name, size, preallocation: 'off' });
      try {
        return await connect(name);
      } catch (err) {
        await control.request({ op: 'volume-delete', volume: name, force: true }).catch(() => undefined);
        throw err;
      }
    },
    complete: async (_name, device) => {
      await device.flush();
      await device.close();
    },
    makeTemplate: (name, settings) => untilDisconnected(async () => (await control.request({ op: 'template-create', volume: name, ...(settings ? { settings } : {}) })).result as TemplateInfo),
    removeVolume: async (name) => {
      await control.request({ op: 'volume-delete', volume: name, force: true }).catch(() => undefined);
    },
    removeTemplate: async (name) => {
      await control.request({ op: 'template-delete', template: name, force: true }).catch(() => undefined);
    },
  };
}

/**
 * The server counts this process's NBD connection, and holds the volume
 * open for it, until it has seen the connection close: a template made
 * right after waits for that (a few milliseconds; ten seconds at most).
 */
async function untilDisconnected<T>(fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline || !(err instanceof Error) || !/connected client|is open by/.test(err.message)) throw err;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}
