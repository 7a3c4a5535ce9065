// The msgpack subset that /v1/stream uses: nil, booleans, integers, floats, strings, binary
// (Uint8Array), arrays and maps with string keys. Extension types are refused.

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

/** Encodes `value` as one msgpack value; returns a Uint8Array. Undefined map values are left out. */
export function encode(value) {
  const writer = new Writer();
  writer.value(value);
  return writer.bytes();
}

/** Decodes one msgpack value that must fill `bytes` exactly; binary comes back as Uint8Array. */
export function decode(bytes) {
  const reader = new Reader(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes));
  const value = reader.value();
  if (reader.pos !== reader.buf.length) throw new Error("msgpack: trailing bytes after the value");
  return value;
}

class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
  }

  bytes() { return this.buf.slice(0, this.pos); }

  reserve(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buf.subarray(0, this.pos));
    this.buf = grown;
    this.view = new DataView(grown.buffer);
  }

  u8(b) { this.reserve(1); this.buf[this.pos++] = b; }
  u16(v) { this.reserve(2); this.view.setUint16(this.pos, v); this.pos += 2; }
  u32(v) { this.reserve(4); this.view.setUint32(this.pos, v); this.pos += 4; }
  raw(bytes) { this.reserve(bytes.length); this.buf.set(bytes, this.pos); this.pos += bytes.length; }

  value(v) {
    if (v === null || v === undefined) this.u8(0xc0);
    else if (v === false) this.u8(0xc2);
    else if (v === true) this.u8(0xc3);
    else if (typeof v === "number") this.number(v);
    else if (typeof v === "bigint") this.bigint(v);
    else if (typeof v === "string") this.string(v);
    else if (v instanceof Uint8Array) this.binary(v);
    else if (v instanceof ArrayBuffer) this.binary(new Uint8Array(v));
    else if (Array.isArray(v)) this.array(v);
    else if (typeof v === "object") this.map(v);
    else throw new TypeError(`msgpack: cannot encode a ${typeof v}`);
  }

  number(v) {
    if (!Number.isSafeInteger(v)) {  // floats, and integers too large to be exact
      this.u8(0xcb); this.reserve(8); this.view.setFloat64(this.pos, v); this.pos += 8;
    } else if (v >= 0 && v < 128) this.u8(v);
    else if (v < 0 && v >= -32) this.u8(v & 0xff);
    else if (v >= 0 && v <= 0xffffffff) {
      if (v <= 0xff) { this.u8(0xcc); this.u8(v); }
      else if (v <= 0xffff) { this.u8(0xcd); this.u16(v); }
      else { this.u8(0xce); this.u32(v); }
    } else if (v < 0 && v >= -0x80000000) {
      this.u8(0xd2); this.reserve(4); this.view.setInt32(this.pos, v); this.pos += 4;
    } else this.bigint(BigInt(v));
  }

  bigint(v) {
    this.u8(v < 0n ? 0xd3 : 0xcf);
    this.reserve(8);
    if (v < 0n) this.view.setBigInt64(this.pos, v); else this.view.setBigUint64(this.pos, v);
    this.pos += 8;
  }

  string(s) {
    const bytes = textEncoder.encode(s);
    const n = bytes.length;
    if (n < 32) this.u8(0xa0 | n);
    else if (n <= 0xff) { this.u8(0xd9); this.u8(n); }
    else if (n <= 0xffff) { this.u8(0xda); this.u16(n); }
    else { this.u8(0xdb); this.u32(n); }
    this.raw(bytes);
  }

  binary(bytes) {
    const n = bytes.length;
    if (n <= 0xff) { this.u8(0xc4); this.u8(n); }
    else if (n <= 0xffff) { this.u8(0xc5); this.u16(n); }
    else { this.u8(0xc6); this.u32(n); }
    this.raw(bytes);
  }

  array(items) {
    this.header(items.length, 0x90, 0xdc, 0xdd);
    for (const item of items) this.value(item);
  }

  map(obj) {
    const entries = Object.entries(obj).filter(([, v]) => v !== undefined);
    this.header(entries.length, 0x80, 0xde, 0xdf);
    for (const [k, v] of entries) { this.string(k); this.value(v); }
  }

  header(n, fix, tag16, tag32) {
    if (n < 16) this.u8(fix | n);
    else if (n <= 0xffff) { this.u8(tag16); this.u16(n); }
    else { this.u8(tag32); this.u32(n); }
  }
}

class Reader {
  constructor(buf) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.pos = 0;
  }

  need(n) {
    if (this.pos + n > this.buf.length) throw new Error("msgpack: truncated value");
    const at = this.pos;
    this.pos += n;
    return at;
  }

  value() {
    const b = this.buf[this.need(1)];
    if (b < 0x80) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xf0) === 0x80) return this.map(b & 0x0f);
    if ((b & 0xf0) === 0x90) return this.array(b & 0x0f);
    if ((b & 0xe0) === 0xa0) return this.string(b & 0x1f);
    const v = this.view;
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.binary(this.buf[this.need(1)]);
      case 0xc5: return this.binary(v.getUint16(this.need(2)));
      case 0xc6: return this.binary(v.getUint32(this.need(4)));
      case 0xca: return v.getFloat32(this.need(4));
      case 0xcb: return v.getFloat64(this.need(8));
      case 0xcc: return this.buf[this.need(1)];
      case 0xcd: return v.getUint16(this.need(2));
      case 0xce: return v.getUint32(this.need(4));
      case 0xcf: return toNumber(v.getBigUint64(this.need(8)));
      case 0xd0: return v.getInt8(this.need(1));
      case 0xd1: return v.getInt16(this.need(2));
      case 0xd2: return v.getInt32(this.need(4));
      case 0xd3: return toNumber(v.getBigInt64(this.need(8)));
      case 0xd9: return this.string(this.buf[this.need(1)]);
      case 0xda: return this.string(v.getUint16(this.need(2)));
      case 0xdb: return this.string(v.getUint32(this.need(4)));
      case 0xdc: return this.array(v.getUint16(this.need(2)));
      case 0xdd: return this.array(v.getUint32(this.need(4)));
      case 0xde: return this.map(v.getUint16(this.need(2)));
      case 0xdf: return this.map(v.getUint32(this.need(4)));
      default: throw new Error(`msgpack: unsupported type byte 0x${b.toString(16)}`);
    }
  }

  string(n) { const at = this.need(n); return textDecoder.decode(this.buf.subarray(at, at + n)); }
  binary(n) { const at = this.need(n); return this.buf.slice(at, at + n); }

  array(n) {
    const out = [];
    for (let i = 0; i < n; i++) out.push(this.value());
    return out;
  }

  map(n) {
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = this.value();
      if (typeof key !== "string") throw new Error("msgpack: map key is not a string");
      // defineProperty keeps a "__proto__" key an ordinary field.
      Object.defineProperty(out, key, { value: this.value(), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
}

// Integers beyond 2^53 keep their exact value as a BigInt.
function toNumber(big) {
  return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}
