import { randomUUID } from 'node:crypto';
import { isValidName, NAME_RULE, PoolError, type Pool, type TemplateSettings } from '../qcowlike/index.js';
import { checkNewName, dependants, layerName, templateRecord, volumeRecord } from './names.js';
import { putNewTop } from './new-top.js';
import { holdWhole } from './quiesce.js';
import { checkSettings, copySettings } from './template-settings.js';
import type { TemplateInfo } from './types.js';

/**
 * Turns a volume into a template: its top layer freezes under the same name,
 * which stops being a volume. `settings` (an imported package's VM) go with it.
 */
export async function convertToTemplate(pool: Pool, volume: string, settings?: TemplateSettings): Promise<TemplateInfo> {
  const kept = settings === undefined ? {} : { settings: copySettings(checkSettings(settings)) };
  await pool.changeChain(async (change) => {
    const vol = volumeRecord(pool, volume);
    const open = pool.openCount(volume);
    if (open > 0) throw new PoolError('EBUSY', `volume '${volume}' is open by ${open} client${open === 1 ? '' : 's'}; a template is read-only, so disconnect first`);
    const top = pool.layerById(vol.layer);
    const origin = top.parent ? layerName(pool, top.parent) : undefined;
    await change(() => {
      top.rec.frozen = true;
      pool.catalogNow.volumes.splice(pool.catalogNow.volumes.indexOf(vol), 1);
      pool.catalogNow.templates.push({ name: volume, layer: top.id, created: new Date().toISOString(), uuid: randomUUID(), ...(origin ? { origin } : {}), ...kept });
    });
  });
  return templateInfo(pool, volume);
}

/**
 * A new template from a volume as it is now (the volume goes on, on a new top
 * layer, as after a snapshot) or from another template (a frozen layer that
 * shares the template's map).
 */
export async function templateFrom(pool: Pool, source: { volume: string } | { template: string }, name: string): Promise<TemplateInfo> {
  await pool.changeChain(async (change) => {
    checkNewName(pool, name, isValidName, NAME_RULE);
    const created = new Date().toISOString();
    await pool.enableSharing();
    if ('template' in source) {
      const rec = templateRecord(pool, source.template);
      const from = pool.layerById(rec.layer);
      // A copy of a template is the same machine: its settings come along.
      const kept = rec.settings === undefined ? {} : { settings: copySettings(rec.settings) };
      const unhold = await pool.holdMaps([from]);
      try {
        await change(() => {
          const layer = pool.branchLayer(from, true);
          pool.catalogNow.templates.push({ name, layer: layer.id, created, uuid: randomUUID(), origin: source.template, ...kept });
        }, unhold);
      } finally {
        unhold();
      }
      return;
    }
    const vol = volumeRecord(pool, source.volume);
    const top = pool.layerById(vol.layer);
    const unhold = await pool.holdMaps([top]);
    const release = await holdWhole([top]);
    try {
      await change(
        () => {
          putNewTop(pool, vol, top);
          top.rec.frozen = true;
          pool.catalogNow.templates.push({ name, layer: top.id, created, uuid: randomUUID(), origin: source.volume });
        },
        release,
      );
    } finally {
      release();
      unhold();
    }
  });
  return templateInfo(pool, name);
}

/** Refused while clones depend on it (the error lists them) or a client reads it. */
export async function deleteTemplate(pool: Pool, name: string): Promise<void> {
  const layer = await pool.changeChain(async (change) => {
    const rec = templateRecord(pool, name);
    const layer = pool.layerById(rec.layer);
    const deps = dependants(pool, layer, name);
    if (deps.length > 0) throw new PoolError('EBUSY', `template '${name}' has dependent clones: ${deps.join(', ')} (delete or flatten them first)`);
    if (pool.openCount(name) > 0) throw new PoolError('EBUSY', `template '${name}' is open (exported to a client); disconnect it first`);
    await change(() => {
      pool.catalogNow.templates.splice(pool.catalogNow.templates.indexOf(rec), 1);
    });
    return layer;
  });
  await pool.settleLayer(layer);
}

export async function templateInfo(pool: Pool, name: string): Promise<TemplateInfo> {
  const rec = templateRecord(pool, name);
  const layer = pool.layerById(rec.layer);
  return { name, uuid: rec.uuid, created: rec.created, size: layer.size, layer: layer.id, allocatedBytes: await pool.layerAllocated(layer), origin: rec.origin ?? null, dependants: dependants(pool, layer, name), settings: rec.settings ?? null };
}

export async function listTemplates(pool: Pool): Promise<TemplateInfo[]> {
  const out: TemplateInfo[] = [];
  for (const t of pool.catalogNow.templates) out.push(await templateInfo(pool, t.name));
  return out;
}
