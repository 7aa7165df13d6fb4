import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { PackageError } from './errors.js';

/**
 * An XML element with its names resolved against the namespaces in scope,
 * so that `ovf:Disk`, `Disk` under a default namespace and `o:Disk` are the
 * same element: descriptors from different tools bind different prefixes.
 */
export interface XmlElement {
  /** Namespace URI; '' when none is in scope. */
  readonly ns: string;
  readonly local: string;
  /** Attributes by `{ns}local`, or `local` for an unprefixed one (no namespace, as XML says). */
  readonly attrs: ReadonlyMap<string, string>;
  readonly children: readonly XmlElement[];
  /** The element's own text, its parts joined. */
  readonly text: string;
}

/** Descriptors are small; a bigger one is not a descriptor. */
export const MAX_DESCRIPTOR_BYTES = 16 * 1024 * 1024;

type Ordered = Record<string, unknown>;

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  processEntities: true,
  ignoreDeclaration: true,
  ignorePiTags: true,
});

function split(qname: string): [string | null, string] {
  const at = qname.indexOf(':');
  return at < 0 ? [null, qname] : [qname.slice(0, at), qname.slice(at + 1)];
}

/** Parses `text` (named `file` in errors) into a namespace-resolved tree; malformed XML names its line. */
export function parseXml(text: string, file: string): XmlElement {
  if (Buffer.byteLength(text) > MAX_DESCRIPTOR_BYTES) throw new PackageError(file, `is larger than ${MAX_DESCRIPTOR_BYTES} bytes, too large for a descriptor`);
  // Descriptors have no DTD; refusing one rules out entity expansion.
  if (/<!DOCTYPE/i.test(text)) throw new PackageError(file, 'has a DOCTYPE, which descriptors do not use');
  const valid = XMLValidator.validate(text);
  if (valid !== true) throw new PackageError(file, `is not well-formed XML: ${valid.err.msg} (line ${valid.err.line})`);
  const nodes = parser.parse(text) as Ordered[];
  const roots = nodes.filter((n) => !('#text' in n) && !('#comment' in n));
  if (roots.length !== 1) throw new PackageError(file, 'has no single root element');
  return convert(roots[0]!, new Map([['xml', 'http://www.w3.org/XML/1998/namespace']]), file);
}

function convert(node: Ordered, scope: ReadonlyMap<string, string>, file: string): XmlElement {
  const qname = Object.keys(node).find((k) => k !== ':@')!;
  const rawAttrs = (node[':@'] ?? {}) as Record<string, string>;
  const inScope = new Map(scope);
  for (const [k, v] of Object.entries(rawAttrs)) {
    if (k === 'xmlns') inScope.set('', v);
    else if (k.startsWith('xmlns:')) inScope.set(k.slice(6), v);
  }
  const resolve = (prefix: string | null, what: string): string => {
    const uri = inScope.get(prefix ?? '');
    if (uri === undefined) {
      if (prefix === null) return '';
      throw new PackageError(file, `${what} uses the prefix '${prefix}', which no xmlns declares`);
    }
    return uri;
  };
  const [prefix, local] = split(qname);
  const attrs = new Map<string, string>();
  for (const [k, v] of Object.entries(rawAttrs)) {
    if (k === 'xmlns' || k.startsWith('xmlns:')) continue;
    const [p, l] = split(k);
    attrs.set(p === null ? l : `{${resolve(p, `attribute ${k}`)}}${l}`, v);
  }
  const children: XmlElement[] = [];
  const texts: string[] = [];
  for (const child of (node[qname] ?? []) as Ordered[]) {
    if ('#text' in child) texts.push(String(child['#text']));
    else if (!('#comment' in child)) children.push(convert(child, inScope, file));
  }
  return { ns: resolve(prefix, `element ${qname}`), local, attrs, children, text: texts.join('') };
}

/** The children of `el` named `local` in one of the namespaces `ns`. */
export function childrenNamed(el: XmlElement, ns: readonly string[], local: string): XmlElement[] {
  return el.children.filter((c) => c.local === local && ns.includes(c.ns));
}

export function childNamed(el: XmlElement, ns: readonly string[], local: string): XmlElement | undefined {
  return childrenNamed(el, ns, local)[0];
}

/**
 * An attribute in one of the namespaces `ns`, or unprefixed: real
 * descriptors write `ovf:id` mostly, but some tools leave it bare.
 */
export function attrOf(el: XmlElement, ns: readonly string[], local: string): string | undefined {
  for (const n of ns) {
    const v = el.attrs.get(`{${n}}${local}`);
    if (v !== undefined) return v;
  }
  return el.attrs.get(local);
}

/** Escapes text for an attribute value in either quote or element content. */
export function xmlEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}
