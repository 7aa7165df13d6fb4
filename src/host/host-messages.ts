/**
 * Where the host layer's warnings go (a degraded array at open, a rebuild
 * that stopped): the library never prints, the program that uses it says
 * where, once (the CLI: its stderr). Until then they are dropped.
 */
let sink: (message: string) => void = () => undefined;

export function setHostMessages(to: (message: string) => void): void {
  sink = to;
}

export function hostMessage(message: string): void {
  sink(message);
}
