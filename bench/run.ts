/** `npm run bench`: the NBD benchmark (options: npm run bench -- --help). */
import { main } from './nbd.js';

process.exitCode = await main(process.argv.slice(2));
