/** `text` as a part of a regular expression that matches exactly it (paths and host names hold dots). */
export function literal(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}
