// One /v1/stream session: opens the WebSocket, encodes client events (JSON text frames with base64
// media, or msgpack binary frames) and dispatches decoded server events. See docs/protocol.md.

import * as msgpack from "./msgpack.js";

/** What each close code means for the user (docs/protocol.md, "Close codes"). */
export const CLOSE_REASONS = {
  1000: "normal closure",
  1001: "going away: the server shut down or the session was idle too long",
  1006: "the connection dropped without a close frame (server unreachable, or it refused the handshake)",
  1008: "policy violation: missing or wrong API key, or this page's Origin is not allowed",
  1009: "a message was larger than the server accepts",
  1011: "internal server error",
  1013: "the server is full; try again later",
};

/** The stream URL for a page served by the gateway: same host, ws or wss to match http or https. */
export function defaultStreamUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/v1/stream`;
}

/**
 * Where and how to connect. The API key travels either as a `token` query parameter or as the
 * WebSocket subprotocol `bearer.<key>` (browsers cannot set an Authorization header). With the
 * latter the page also offers `tributary.v1`, which the server selects, so the key is never echoed
 * back in the handshake response.
 */
export function connectionTarget(url, apiKey, authMode) {
  if (!apiKey) return { url, protocols: [] };
  if (authMode === "subprotocol") return { url, protocols: ["tributary.v1", `bearer.${apiKey}`] };
  const sep = url.includes("?") ? "&" : "?";
  return { url: `${url}${sep}token=${encodeURIComponent(apiKey)}`, protocols: [] };
}

/** Standard base64 with padding, as the JSON encoding wants it for media bytes. */
export function toBase64(bytes) {
  if (typeof bytes.toBase64 === "function") return bytes.toBase64();
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** The frame for `event`: a msgpack Uint8Array, or a JSON string with byte fields as base64. */
export function encodeEvent(event, encoding) {
  if (encoding === "msgpack") return msgpack.encode(event);
  return JSON.stringify(event, (key, value) => (value instanceof Uint8Array ? toBase64(value) : value));
}

/** The server event in one received frame (text: JSON, binary: msgpack). */
export function decodeFrame(data) {
  const event = typeof data === "string" ? JSON.parse(data) : msgpack.decode(new Uint8Array(data));
  if (event === null || typeof event !== "object" || typeof event.type !== "string") {
    throw new Error("the server sent a frame that is not an event map");
  }
  return event;
}

/**
 * A session over one WebSocket. Emits "event" (detail: the server event, any type) and "close"
 * (detail: {code, reason, explanation}). Counts what it sends, per frame and per byte.
 */
export class Session extends EventTarget {
  constructor({ url, apiKey = "", authMode = "query", encoding = "msgpack" }) {
    super();
    this.target = connectionTarget(url, apiKey, authMode);
    this.encoding = encoding;
    this.ws = null;
    this.info = null;  // the session.created event
    this.numFramesSent = 0;
    this.numBytesSent = 0;
    this.numEventsReceived = 0;
  }

  get isOpen() { return this.ws !== null && this.ws.readyState === WebSocket.OPEN; }
  get bufferedAmount() { return this.ws ? this.ws.bufferedAmount : 0; }
  get limits() { return (this.info && this.info.limits) || {}; }

  /** Opens the socket; resolves with session.created, rejects if the socket closes first. */
  connect() {
    return new Promise((resolve, reject) => {
      const { url, protocols } = this.target;
      try {
        this.ws = protocols.length ? new WebSocket(url, protocols) : new WebSocket(url);
      } catch (err) {  // a malformed URL, or a key that is not a valid subprotocol token
        reject(new Error(`cannot open ${url}: ${err.message}`));
        return;
      }
      this.ws.binaryType = "arraybuffer";
      this.ws.onmessage = (msg) => {
        let event;
        try {
          event = decodeFrame(msg.data);
        } catch (err) {
          event = { type: "error", error: { code: "client_decode", message: `unreadable server frame: ${err.message}` } };
        }
        this.numEventsReceived++;
        if (event.type === "session.created" && !this.info) {
          this.info = event;
          resolve(event);
        }
        this.dispatchEvent(new CustomEvent("event", { detail: event }));
      };
      this.ws.onclose = (msg) => {
        const explanation = CLOSE_REASONS[msg.code] || "closed";
        const detail = { code: msg.code, reason: msg.reason, explanation };
        if (!this.info) reject(new Error(`connection closed before the session started: ${msg.code} ${explanation}${msg.reason ? ` (${msg.reason})` : ""}`));
        this.dispatchEvent(new CustomEvent("close", { detail }));
      };
    });
  }

  /** Sends one client event; returns false when the socket is not open. */
  send(event) {
    if (!this.isOpen) return false;
    const frame = encodeEvent(event, this.encoding);
    this.ws.send(frame);
    this.numFramesSent++;
    this.numBytesSent += typeof frame === "string" ? frame.length : frame.byteLength;
    return true;
  }

  close() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "client closed");
  }
}
