/**
 * Wire constants of the NBD protocol, each checked against doc/proto.md of
 * NetworkBlockDevice/nbd master (LIST_META_CONTEXT is 9 and SET_META_CONTEXT
 * 10 there; older copies of the document number them differently).
 */

export const NBDMAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT': sent by the server after NBDMAGIC, and by the client before every option. */
export const IHAVEOPT = 0x49484156454f5054n;
/** Option reply magic; the high word is 0x0003e889. */
export const OPT_REPLY_MAGIC_HI = 0x0003e889;
export const OPT_REPLY_MAGIC_LO = 0x045565a9;

export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
/** Reserved for the experimental EXTENDED_HEADERS extension, which this server does not negotiate. */
export const EXTENDED_REQUEST_MAGIC = 0x21e41c71;

// Handshake flags (server, 16 bits).
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
// Client flags (32 bits).
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

// Transmission flags (16 bits).
export const FLAG_HAS_FLAGS = 1 << 0;
export const FLAG_READ_ONLY = 1 << 1;
export const FLAG_SEND_FLUSH = 1 << 2;
export const FLAG_SEND_FUA = 1 << 3;
export const FLAG_ROTATIONAL = 1 << 4;
export const FLAG_SEND_TRIM = 1 << 5;
export const FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const FLAG_SEND_DF = 1 << 7;
export const FLAG_CAN_MULTI_CONN = 1 << 8;
export const FLAG_SEND_RESIZE = 1 << 9;
export const FLAG_SEND_CACHE = 1 << 10;
export const FLAG_SEND_FAST_ZERO = 1 << 11;

// Options.
export const OPT_EXPORT_NAME = 1;
export const OPT_ABORT = 2;
export const OPT_LIST = 3;
export const OPT_PEEK_EXPORT = 4;
export const OPT_STARTTLS = 5;
export const OPT_INFO = 6;
export const OPT_GO = 7;
export const OPT_STRUCTURED_REPLY = 8;
export const OPT_LIST_META_CONTEXT = 9;
export const OPT_SET_META_CONTEXT = 10;
export const OPT_EXTENDED_HEADERS = 11;

// Option replies.
export const REP_ACK = 1;
export const REP_SERVER = 2;
export const REP_INFO = 3;
export const REP_META_CONTEXT = 4;
const REP_ERR = 0x80000000;
export const REP_ERR_UNSUP = REP_ERR + 1;
export const REP_ERR_POLICY = REP_ERR + 2;
export const REP_ERR_INVALID = REP_ERR + 3;
export const REP_ERR_PLATFORM = REP_ERR + 4;
export const REP_ERR_TLS_REQD = REP_ERR + 5;
export const REP_ERR_UNKNOWN = REP_ERR + 6;
export const REP_ERR_SHUTDOWN = REP_ERR + 7;
export const REP_ERR_BLOCK_SIZE_REQD = REP_ERR + 8;
export const REP_ERR_TOO_BIG = REP_ERR + 9;

// Information types of NBD_REP_INFO.
export const INFO_EXPORT = 0;
export const INFO_NAME = 1;
export const INFO_DESCRIPTION = 2;
export const INFO_BLOCK_SIZE = 3;

// Commands.
export const CMD_READ = 0;
export const CMD_WRITE = 1;
export const CMD_DISC = 2;
export const CMD_FLUSH = 3;
export const CMD_TRIM = 4;
export const CMD_CACHE = 5;
export const CMD_WRITE_ZEROES = 6;
export const CMD_BLOCK_STATUS = 7;

// Command flags.
export const CMD_FLAG_FUA = 1 << 0;
export const CMD_FLAG_NO_HOLE = 1 << 1;
export const CMD_FLAG_DF = 1 << 2;
export const CMD_FLAG_REQ_ONE = 1 << 3;
export const CMD_FLAG_FAST_ZERO = 1 << 4;

// Structured reply flags and chunk types.
export const REPLY_FLAG_DONE = 1 << 0;
export const REPLY_TYPE_NONE = 0;
export const REPLY_TYPE_OFFSET_DATA = 1;
export const REPLY_TYPE_OFFSET_HOLE = 2;
export const REPLY_TYPE_BLOCK_STATUS = 5;
export const REPLY_TYPE_ERROR = (1 << 15) + 1;
export const REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// base:allocation status flags.
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;

// Error values.
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

export const BASE_ALLOCATION = 'base:allocation';

/**
 * Largest READ or WRITE payload: the 32 MiB the protocol says no client may
 * treat as a denial of service, announced in NBD_INFO_BLOCK_SIZE and enforced.
 */
export const MAX_PAYLOAD = 32 * 1024 * 1024;
/** A string in the protocol (export name, query, message) MUST be no longer than this. */
export const MAX_STRING = 4096;
export const IANA_PORT = 10809;
