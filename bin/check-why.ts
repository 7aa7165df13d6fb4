import type { CheckProblem } from '../src/qcowlike/index.js';

/**
 * Why `pool check --repair` left problems as they are, in one clause per
 * kind, so that a repair that repaired nothing is not mistaken for one that
 * failed. `redundant`: the pool is on a RAID level that keeps a second copy.
 */
export function whyUnrepaired(problems: CheckProblem[], redundant: boolean): string {
  const open = problems.filter((p) => !p.repaired);
  const of = (kinds: CheckProblem['kind'][]): CheckProblem[] => open.filter((p) => kinds.includes(p.kind));
  const n = (count: number, thing: string): string => `${count} ${thing}${count === 1 ? '' : 's'}`;
  const parts: string[] = [];
  const checksum = of(['checksum']).filter((p) => p.pending !== true);
  if (checksum.length > 0) {
    parts.push(
      redundant
        ? `${n(checksum.length, 'block')} fail${checksum.length === 1 ? 's' : ''} the checksum on every copy, so no good copy is left to rewrite from`
        : `${n(checksum.length, 'block')} fail${checksum.length === 1 ? 's' : ''} the checksum and a file pool keeps no second copy to rewrite from (restore, or export --salvage what verifies)`,
    );
  }
  const pending = open.filter((p) => p.pending === true);
  if (pending.length > 0) parts.push(`${n(pending.length, 'copy')} could not be rewritten from the good one (see the DETAIL column)`);
  const quarantine = of(['quarantine']);
  if (quarantine.length > 0) parts.push(`quarantined clusters are kept while a damaged table may still reference them`);
  const owners = of(['overlap', 'dangling']);
  if (owners.length > 0) parts.push(`${n(owners.length, 'reference')} claim${owners.length === 1 ? 's' : ''} a cluster twice or outside the pool, and which one is right cannot be told without guessing`);
  const journal = of(['journal']);
  if (journal.length > 0) parts.push(`the double-write head is cleared by the next read-write open, not by check`);
  const metadata = of(['header', 'root', 'catalog']);
  if (metadata.length > 0) parts.push(`${n(metadata.length, 'metadata copy', )} ha${metadata.length === 1 ? 's' : 've'} no good copy to rewrite from`);
  const other = open.length - checksum.length - pending.length - quarantine.length - owners.length - journal.length - metadata.length;
  if (other > 0) parts.push(`${n(other, 'other problem')} need${other === 1 ? 's' : ''} a person to decide`);
  return parts.join('; ');
}
