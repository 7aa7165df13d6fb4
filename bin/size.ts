// Sizes as users type and read them; the host layer's, shared with every command.
export * from '../src/host/size.js';
