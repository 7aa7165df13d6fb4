import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { streamSource, type ByteSource } from '../image/byte-source.js';

/** How a download is read: redirects followed, and how long silence may last before it counts as a stall. */
export interface HttpOptions {
  /** Redirects followed at most (a loop is refused, not followed forever). */
  maxRedirects?: number;
  /** Milliseconds without a byte (headers or body) after which the download fails. */
  stallMs?: number;
  signal?: AbortSignal;
}

/** A download that went wrong: the URL and what happened, in one line. */
export class DownloadError extends Error {
  constructor(
    readonly url: string,
    message: string,
  ) {
    super(message);
    this.name = 'DownloadError';
  }
}

export const DEFAULT_STALL_MS = 60_000;
const DEFAULT_REDIRECTS = 5;

export function isHttpUrl(text: string): boolean {
  return /^https?:\/\//i.test(text);
}

/**
 * An http:// or https:// URL as a forward-only ByteSource: read once, front
 * to back, never kept whole. Its size is the Content-Length when the server
 * gives one; a body that ends short of it, a dropped connection, or a stall
 * fails the read with a DownloadError saying how far it got.
 */
export async function httpSource(url: string, opts: HttpOptions = {}): Promise<ByteSource> {
  const { stream, size, url: finalUrl } = await httpStream(url, opts);
  return streamSource(stream, finalUrl, size);
}

/** The body of a GET of `url` as a stream that fails as httpSource says; `size` is the Content-Length, `url` where redirects led. */
export async function httpStream(url: string, opts: HttpOptions = {}): Promise<{ stream: Readable; size: number | null; url: string }> {
  const { response, finalUrl } = await get(url, opts);
  const length = response.headers['content-length'];
  const size = length !== undefined && /^\d+$/.test(length) ? Number(length) : null;
  const stream = Readable.from(checkedBody(response, finalUrl, size, opts.stallMs ?? DEFAULT_STALL_MS, opts.signal), { objectMode: false });
  // Destroying the body (a reader that stops early) lets the connection go.
  stream.once('close', () => response.destroy());
  return { stream, size, url: finalUrl };
}

/** The response to a GET of `url` after redirects, with a 2xx status; anything else is refused naming the status. */
async function get(url: string, opts: HttpOptions): Promise<{ response: http.IncomingMessage; finalUrl: string }> {
  let at = url;
  for (let hop = 0; ; hop++) {
    const response = await request(at, opts.stallMs ?? DEFAULT_STALL_MS, opts.signal);
    const status = response.statusCode ?? 0;
    if (status >= 300 && status < 400 && response.headers.location !== undefined) {
      response.resume();
      if (hop >= (opts.maxRedirects ?? DEFAULT_REDIRECTS)) throw new DownloadError(url, `download of ${url}: more than ${opts.maxRedirects ?? DEFAULT_REDIRECTS} redirects`);
      const next = new URL(response.headers.location, at);
      if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new DownloadError(url, `download of ${url}: redirected to ${next.href}, which is not http or https`);
      at = next.href;
      continue;
    }
    if (status < 200 || status >= 300) {
      response.resume();
      throw new DownloadError(at, `download of ${at} refused: HTTP ${status}${response.statusMessage ? ` ${response.statusMessage}` : ''}`);
    }
    return { response, finalUrl: at };
  }
}

function request(url: string, stallMs: number, signal: AbortSignal | undefined): Promise<http.IncomingMessage> {
  const u = new URL(url);
  const client = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.get(u, { ...(signal ? { signal } : {}), headers: { 'accept-encoding': 'identity' } }, (res) => {
      req.setTimeout(0);
      resolve(res);
    });
    req.setTimeout(stallMs, () => req.destroy(new DownloadError(url, `download of ${url}: no answer in ${seconds(stallMs)}`)));
    req.on('error', (err) => reject(err instanceof DownloadError ? err : new DownloadError(url, `download of ${url} failed: ${err.message}`)));
  });
}

/**
 * The body's chunks, each awaited against the stall timer (only while this
 * side waits for the network: a slow consumer is not a stall), ending with an
 * error when fewer than Content-Length bytes came.
 */
async function* checkedBody(res: http.IncomingMessage, url: string, size: number | null, stallMs: number, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
  const chunks = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let got = 0;
  const of = size === null ? '' : ` of ${size}`;
  try {
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new DownloadError(url, `download of ${url} stalled at ${got}${of} bytes: nothing came for ${seconds(stallMs)}`)), stallMs);
      });
      let next: IteratorResult<Buffer>;
      try {
        next = await Promise.race([chunks.next(), stalled]);
      } catch (err) {
        if (err instanceof DownloadError) throw err;
        if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('interrupted');
        throw new DownloadError(url, `download of ${url} ended at ${got}${of} bytes: ${err instanceof Error ? err.message : String(err)}`);
      } finally {
        clearTimeout(timer);
      }
      if (next.done) break;
      got += next.value.length;
      if (size !== null && got > size) throw new DownloadError(url, `download of ${url} sent more than its Content-Length of ${size} bytes`);
      yield next.value;
    }
    if (size !== null && got < size) throw new DownloadError(url, `download of ${url} ended at ${got} of ${size} bytes`);
  } finally {
    res.destroy();
  }
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

/**
 * A file a descriptor at `base` names by `href`, as a URL: resolved relative
 * to the descriptor's folder, and refused when it leaves it (another host, a
 * `..` above it, an absolute path elsewhere) or carries a query or fragment
 * that would make it another resource.
 */
export function relativeUrl(base: string, href: string): string {
  const b = new URL(base);
  const folder = new URL('.', b);
  let target: URL;
  try {
    target = new URL(href, folder);
  } catch {
    throw new DownloadError(base, `href '${href}' in ${base} is not a valid reference`);
  }
  const inside = target.origin === folder.origin && target.pathname.startsWith(folder.pathname) && target.pathname.length > folder.pathname.length;
  if (!inside || /^[a-z][a-z0-9+.-]*:/i.test(href) || href.startsWith('/') || decodeURIComponent(target.pathname.slice(folder.pathname.length)).split('/').includes('..') || target.search !== '' || target.hash !== '') {
    throw new DownloadError(base, `href '${href}' in ${base} leaves the package's folder ${folder.href}`);
  }
  return target.href;
}
