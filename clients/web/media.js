// Media sources for a session: uploaded files, the camera (JPEG frames from a canvas) and the
// microphone (PCM16 at 16 kHz from an AudioWorklet). All of them send `input.append` chunks.

const EXTENSION_MODALITY = {
  jpg: "image", jpeg: "image", png: "image", webp: "image", gif: "image",
  mp4: "video", m4v: "video", mov: "video", webm: "video", mkv: "video", ts: "video",
  wav: "audio", mp3: "audio", ogg: "audio", opus: "audio", flac: "audio", m4a: "audio", aac: "audio",
};
const MAX_BUFFERED_BYTES = 4 << 20;  // uploads wait while the socket holds more than this
const LIVE_MAX_BUFFERED_BYTES = 1 << 20;  // live frames are dropped while it holds more

/** Counters of what the live sources sent (or dropped), shared by all of them over the page's life. */
export function newCounters() {
  return { cameraFrames: 0, cameraBytes: 0, micChunks: 0, micSamples: 0, micLevel: 0, micPeakLevel: 0, numDropped: 0 };
}

let numItems = 0;
const itemPrefix = Math.random().toString(36).slice(2, 8);

/** A fresh item id, unique in this page (ids are 1 to 64 of A-Z a-z 0-9 _ . : -). */
export function newItemId(kind) {
  numItems += 1;
  return `${kind}-${itemPrefix}-${numItems}`;
}

function isItemOf(kinds, itemId) {
  return typeof itemId === "string" && kinds.some((kind) => itemId.startsWith(`${kind}-${itemPrefix}-`));
}

/** "image", "video" or "audio" for a File, from its type or else its extension; null if unknown. */
export function fileModality(file) {
  if (/^image\/jpeg;\s*fps=/i.test(file.type || "")) return "video";  // a JPEG sequence, as the camera sends
  const major = (file.type || "").split("/")[0];
  if (["image", "video", "audio"].includes(major)) return major;
  const ext = file.name.includes(".") ? file.name.split(".").pop().toLowerCase() : "";
  return EXTENSION_MODALITY[ext] || null;
}

/** Raw bytes per input.append chunk so that one frame stays under the server's max_message_bytes. */
export function chunkBytes(session) {
  const maxMessage = session.limits.max_message_bytes || 1 << 20;
  const room = Math.max(4096, maxMessage - 2048);  // the rest of the event's fields
  const raw = session.encoding === "json" ? Math.floor((room * 3) / 4) : room;  // base64 grows 4/3
  return Math.min(raw, 256 << 10);
}

async function sha256Hex(bytes) {
  if (!globalThis.crypto || !crypto.subtle) return undefined;  // only in secure contexts
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function waitForRoom(session, maxBuffered) {
  while (session.isOpen && session.bufferedAmount > maxBuffered) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Uploads `file` as item `itemId` in chunks. `shouldStop()`, asked before each chunk, ends the
 * upload early (the server answered input.known, or the user removed the file). Calls
 * onProgress(sentBytes, totalBytes). Throws when the socket closes.
 */
export async function uploadFile(session, file, { itemId, shouldStop = () => false, onProgress = () => {} }) {
  const modality = fileModality(file);
  if (!modality) throw new Error(`cannot tell whether ${file.name} is an image, a video or audio`);
  const bytes = new Uint8Array(await file.arrayBuffer());
  const head = {
    type: "input.append", item_id: itemId, modality,
    mime: file.type || "application/octet-stream",  // the server sniffs a generic type
  };
  const contentHash = await sha256Hex(bytes);
  const step = chunkBytes(session);
  let offset = 0;
  do {
    await waitForRoom(session, MAX_BUFFERED_BYTES);
    if (shouldStop()) return;
    const end = Math.min(bytes.length, offset + step);
    const event = { ...head, data: bytes.subarray(offset, end), final: end === bytes.length };
    if (offset === 0 && contentHash) event.content_hash = contentHash;
    if (!session.send(event)) throw new Error("the connection closed during the upload");
    offset = end;
    onProgress(offset, bytes.length);
  } while (offset < bytes.length);
}

/**
 * The camera as a live source. In "video" mode frames are chunks of one `image/jpeg;fps=N` item (a
 * JPEG sequence the server decodes as it arrives), rolled over after `windowSeconds`; in "image"
 * mode each frame is its own image item and replaces the previous one. `take()` hands a response
 * the item to reference.
 */
export class CameraStream {
  constructor(session, { video, counters, fps = 2, mode = "video", windowSeconds = 20, maxWidth = 640 }) {
    Object.assign(this, { session, video, counters, fps, mode, windowSeconds, maxWidth });
    this.canvas = document.createElement("canvas");
    this.stream = null;
    this.timer = null;
    this.busy = false;
    this.segmentId = null;  // video mode: the item being appended to
    this.numSegmentFrames = 0;
    this.sealedId = null;   // video mode: the last item handed to a response
    this.latestId = null;   // image mode: the newest frame's item
  }

  get mime() { return this.mode === "video" ? `image/jpeg;fps=${this.fps}` : "image/jpeg"; }

  /** Whether `itemId` is one of this camera's items. */
  owns(itemId) { return isItemOf(["cam", "frame"], itemId); }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    this.video.srcObject = this.stream;
    await this.video.play();
    this.timer = setInterval(() => this.tick(), 1000 / this.fps);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = null;
    this.video.srcObject = null;
    for (const id of [this.segmentId, this.sealedId, this.latestId]) if (id) this.session.send({ type: "input.delete", item_id: id });
    this.segmentId = this.sealedId = this.latestId = null;
  }

  async tick() {
    if (this.busy || !this.session.isOpen) return;
    if (this.session.bufferedAmount > LIVE_MAX_BUFFERED_BYTES) { this.counters.numDropped++; return; }
    this.busy = true;
    try {
      const jpeg = await this.capture();
      if (jpeg && this.timer !== null) this.sendFrame(jpeg);  // not after stop()
    } finally {
      this.busy = false;
    }
  }

  async capture() {
    const { videoWidth: w, videoHeight: h } = this.video;
    if (!w || !h) return null;
    const scale = Math.min(1, this.maxWidth / w);
    this.canvas.width = Math.round(w * scale);
    this.canvas.height = Math.round(h * scale);
    this.canvas.getContext("2d").drawImage(this.video, 0, 0, this.canvas.width, this.canvas.height);
    const blob = await new Promise((resolve) => this.canvas.toBlob(resolve, "image/jpeg", 0.8));
    return blob ? new Uint8Array(await blob.arrayBuffer()) : null;
  }

  sendFrame(jpeg) {
    if (this.mode === "video") {
      if (this.numSegmentFrames >= this.fps * this.windowSeconds) this.forget("segmentId");
      if (!this.segmentId) { this.segmentId = newItemId("cam"); this.numSegmentFrames = 0; }
      this.append(this.segmentId, jpeg, false);
      this.numSegmentFrames++;
    } else {
      this.forget("latestId");
      this.latestId = newItemId("frame");
      this.append(this.latestId, jpeg, true);
    }
    this.counters.cameraFrames++;
    this.counters.cameraBytes += jpeg.length;
  }

  append(itemId, data, final) {
    const modality = this.mode === "video" ? "video" : "image";
    this.session.send({ type: "input.append", item_id: itemId, modality, mime: this.mime, data, final });
  }

  forget(field) {
    if (this[field]) this.session.send({ type: "input.delete", item_id: this[field] });
    this[field] = null;
  }

  /** The item id of what the camera saw until now, completed; null before the first frame. */
  async take() {
    if (this.mode === "image") {
      if (!this.latestId) { const jpeg = await this.capture(); if (jpeg) this.sendFrame(jpeg); }
      return this.latestId;
    }
    if (!this.segmentId) { const jpeg = await this.capture(); if (jpeg) this.sendFrame(jpeg); }
    if (!this.segmentId) return null;
    // An earlier sealed segment is no longer needed: responses keep what they already hold.
    this.forget("sealedId");
    this.append(this.segmentId, new Uint8Array(0), true);
    this.sealedId = this.segmentId;
    this.segmentId = null;
    return this.sealedId;
  }
}

/**
 * The microphone as a live source: PCM16 mono at 16 kHz, one `audio/pcm;rate=16000` item per window
 * of `windowSeconds` (the older window is deleted), each chunk 100 ms. `take()` completes the
 * current item for a response.
 */
export class MicStream {
  constructor(session, { counters, windowSeconds = 30 }) {
    Object.assign(this, { session, counters, windowSeconds });
    this.rate = 16000;
    this.stream = null;
    this.context = null;
    this.segmentId = null;
    this.numSegmentSamples = 0;
    this.sealedId = null;
  }

  get mime() { return `audio/pcm;rate=${this.rate}`; }

  /** Whether `itemId` is one of this microphone's items. */
  owns(itemId) { return isItemOf(["mic"], itemId); }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 }, video: false });
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule(new URL("./pcm-worklet.js", import.meta.url));
    const source = this.context.createMediaStreamSource(this.stream);
    const node = new AudioWorkletNode(this.context, "pcm16-writer", {
      processorOptions: { targetRate: this.rate, chunkSamples: this.rate / 10 },
    });
    node.port.onmessage = (msg) => this.onPcm(msg.data);
    // The worklet must reach the destination to be pulled; a zero gain keeps it silent.
    const mute = new GainNode(this.context, { gain: 0 });
    source.connect(node).connect(mute).connect(this.context.destination);
    await this.context.resume();
  }

  stop() {
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.context) this.context.close();
    this.stream = this.context = null;
    for (const id of [this.segmentId, this.sealedId]) if (id) this.session.send({ type: "input.delete", item_id: id });
    this.segmentId = this.sealedId = null;
  }

  onPcm({ pcm, rms }) {
    const counters = this.counters;
    counters.micLevel = rms;
    counters.micPeakLevel = Math.max(counters.micPeakLevel, rms);
    if (!this.session.isOpen || this.session.bufferedAmount > LIVE_MAX_BUFFERED_BYTES) { counters.numDropped++; return; }
    const numSamples = pcm.byteLength / 2;
    if (this.segmentId && this.numSegmentSamples >= this.rate * this.windowSeconds) {
      this.session.send({ type: "input.delete", item_id: this.segmentId });
      this.segmentId = null;
    }
    if (!this.segmentId) { this.segmentId = newItemId("mic"); this.numSegmentSamples = 0; }
    this.append(this.segmentId, new Uint8Array(pcm), false);
    this.numSegmentSamples += numSamples;
    counters.micChunks++;
    counters.micSamples += numSamples;
  }

  append(itemId, data, final) {
    this.session.send({ type: "input.append", item_id: itemId, modality: "audio", mime: this.mime, data, final });
  }

  /** The item id of the audio heard until now, completed; null before the first chunk. */
  take() {
    if (!this.segmentId) return null;
    if (this.sealedId) this.session.send({ type: "input.delete", item_id: this.sealedId });
    this.append(this.segmentId, new Uint8Array(0), true);
    this.sealedId = this.segmentId;
    this.segmentId = null;
    return this.sealedId;
  }
}
