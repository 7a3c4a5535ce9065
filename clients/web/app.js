// The page: wires the form, the media sources and one /v1/stream session together.

import { CameraStream, MicStream, fileModality, newCounters, newItemId, uploadFile } from "./media.js";
import { Session, defaultStreamUrl } from "./protocol.js";
import { SAMPLES } from "./samples.js";
import { attachmentRow, formatBytes, logEvent, responseCard, showError } from "./views.js";

const $ = (id) => document.getElementById(id);

const state = {
  session: null,
  connecting: null,        // the connect() in progress
  attachments: new Map(),  // item_id -> {row, isStarted, isKnown, isRemoved}
  responses: new Map(),    // response_id -> card, while in flight
  camera: null,
  mic: null,
  counters: newCounters(),  // what the camera and microphone sent, over the page's life
  numCommitted: 0,
  numResponses: 0,
  uploads: Promise.resolve(),  // uploads run one after another
};

// ---- connection

async function connect() {
  disconnect();
  const session = new Session({
    url: $("server-url").value.trim(),
    apiKey: $("api-key").value,
    authMode: $("auth-mode").value,
    encoding: $("encoding").value,
  });
  state.session = session;
  session.addEventListener("event", (e) => { if (state.session === session) onServerEvent(e.detail); });
  session.addEventListener("close", (e) => { if (state.session === session) onClose(e.detail); });
  setConnState("connecting…", "connecting");
  try {
    const info = await session.connect();
    $("errors").replaceChildren();  // what went wrong before this session is over
    setConnState(`connected · ${info.model} · session ${info.session_id}`, "open");
  } catch (err) {
    // A close before session.created was reported by onClose, which dropped the session.
    if (state.session === session) {
      state.session = null;
      setConnState("not connected", "error");
      showError({ code: "connection", message: err.message });
    }
    throw err;
  }
}

function disconnect() {
  const session = state.session;
  if (!session) return;
  stopCamera();
  stopMic();
  state.session = null;
  session.close();
  for (const card of state.responses.values()) card.finish("failed", "connection closed");
  state.responses.clear();
  for (const { row } of state.attachments.values()) row.li.remove();  // items belong to the session
  state.attachments.clear();
  setConnState("not connected", "closed");
  updateButtons();
}

function onClose({ code, reason, explanation }) {
  if (code !== 1000) showError({ code: `closed ${code}`, message: explanation + (reason ? ` (${reason})` : "") });
  disconnect();
  setConnState(`closed ${code}: ${explanation}`, code === 1000 ? "closed" : "error");
}

function setConnState(text, kind) {
  const node = $("conn-state");
  node.textContent = text;
  node.dataset.state = kind;
  $("connect").textContent = kind === "open" || kind === "connecting" ? "Disconnect" : "Connect";
}

/** The open session, connecting first if there is none; concurrent callers share one attempt. */
async function ensureSession() {
  if (state.session && state.session.isOpen) return state.session;
  if (!state.connecting) state.connecting = connect().finally(() => { state.connecting = null; });
  await state.connecting;
  return state.session;
}

// ---- server events

function onServerEvent(event) {
  if (event.type !== "response.delta") logEvent(event);
  switch (event.type) {
    case "input.committed": {
      state.numCommitted++;
      const att = state.attachments.get(event.item_id);
      const text = `ready · ${event.num_tokens} tokens${event.cached ? " · cached" : ""}`;
      if (att) att.row.setStatus(text);
      else $("live-status").textContent = `${event.item_id}: ${text}`;
      break;
    }
    case "input.known": {
      const att = state.attachments.get(event.item_id);
      if (att) { att.isKnown = true; att.row.setStatus("already on the server"); }
      break;
    }
    case "response.created":
      state.responses.get(event.response_id)?.setStatus("generating", "generating…");
      break;
    case "response.delta":
      state.responses.get(event.response_id)?.append(event.delta);
      break;
    case "response.done":
      onResponseDone(event);
      break;
    case "error":
      onErrorEvent(event.error || {});
      break;
    default:  // session.created, input.deleted and event types added later need nothing here
      break;
  }
}

function onResponseDone(event) {
  const card = state.responses.get(event.response_id);
  if (!card) return;
  state.responses.delete(event.response_id);
  const u = event.usage || {};
  const parts = [`input ${u.input_tokens} tokens`, `output ${u.output_tokens}`, `cached ${u.cached_tokens}`];
  if (event.trace_id) parts.push(`trace ${event.trace_id}`);
  const label = event.finish_reason ? `${event.status} (${event.finish_reason})` : event.status;
  card.finish(event.status, label, parts.join(" · "));
  if (event.error) showError({ ...event.error, response_id: event.response_id });
  updateButtons();
}

function onErrorEvent(error) {
  showError(error);
  const card = state.responses.get(error.response_id);
  // A refused response.create gets this error and no response.done.
  if (card && error.event_type === "response.create") {
    card.finish("refused", `refused: ${error.code}`);
    state.responses.delete(error.response_id);
    updateButtons();
  }
  const att = state.attachments.get(error.item_id);
  if (att) att.row.setStatus(`${error.code}`, true);
  // A live source whose items the server refuses would only repeat the error: stop it.
  if (state.camera?.owns(error.item_id) && error.code !== "unknown_item") {
    stopCamera();
    $("live-status").textContent = `camera stopped: ${error.message}`;
  }
  if (state.mic?.owns(error.item_id) && error.code !== "unknown_item") {
    stopMic();
    $("live-status").textContent = `microphone stopped: ${error.message}`;
  }
}

// ---- files

function addFiles(files, { isSample = false } = {}) {
  for (const file of files) {
    const modality = fileModality(file);
    if (!modality) {
      showError({ code: "unsupported file", message: `${file.name}: not an image, video or audio file` });
      continue;
    }
    const itemId = newItemId("file");
    const att = { isStarted: false, isKnown: false, isRemoved: false, isSample };
    const forget = () => {
      att.isRemoved = true;
      state.attachments.delete(itemId);
      if (att.isStarted) state.session?.send({ type: "input.delete", item_id: itemId });
    };
    att.row = attachmentRow(file, modality, forget);
    att.remove = () => { att.row.li.remove(); forget(); };
    state.attachments.set(itemId, att);
    state.uploads = state.uploads.then(() => upload(file, itemId, att));
  }
}

async function upload(file, itemId, att) {
  if (att.isRemoved) return;
  try {
    const session = await ensureSession();
    await uploadFile(session, file, {
      itemId,
      shouldStop: () => att.isKnown || att.isRemoved,
      onProgress: (sent, total) => {
        att.isStarted = true;  // the server knows the item from its first chunk on
        att.row.setStatus(`uploading ${Math.round((100 * sent) / Math.max(1, total))}%`);
      },
    });
    if (!att.isKnown) att.row.setStatus("uploaded, encoding…");
  } catch (err) {
    att.row.setStatus(`upload failed: ${err.message}`, true);
  }
}

// ---- samples for the demo models: a click attaches one (instead of the previous sample) and asks about it

function setupSamples() {
  for (const sample of SAMPLES) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = sample.label;
    button.addEventListener("click", async () => {
      for (const att of [...state.attachments.values()]) if (att.isSample) att.remove();
      addFiles([await sample.make()], { isSample: true });
      $("prompt").value = sample.prompt;
      $("prompt").focus();
    });
    $("sample-buttons").append(button);
  }
}

// ---- camera and microphone

async function toggleCamera() {
  if (state.camera) { stopCamera(); return; }
  try {
    const session = await ensureSession();
    const fps = Number($("camera-fps").value);
    if (!(fps >= 0.5 && fps <= 30)) throw new Error("frames/s must be between 0.5 and 30");
    state.camera = new CameraStream(session, {
      video: $("camera-preview"), counters: state.counters, fps, mode: $("camera-mode").value,
    });
    $("camera-preview").classList.add("live");
    await state.camera.start();
  } catch (err) {
    stopCamera();
    showError({ code: "camera", message: err.message });
  }
  updateButtons();
}

function stopCamera() {
  if (state.camera) state.camera.stop();
  state.camera = null;
  $("camera-preview").classList.remove("live");
  updateButtons();
}

async function toggleMic() {
  if (state.mic) { stopMic(); return; }
  try {
    state.mic = new MicStream(await ensureSession(), { counters: state.counters });
    await state.mic.start();
  } catch (err) {
    stopMic();
    showError({ code: "microphone", message: err.message });
  }
  updateButtons();
}

function stopMic() {
  if (state.mic) state.mic.stop();
  state.mic = null;
  updateButtons();
}

// ---- requests

/** Reads an optional integer field; throws with the field's name when it is not one. */
function intField(id, name, { min = -(2 ** 31), max = 2 ** 31 - 1 } = {}) {
  const raw = $(id).value.trim();
  if (raw === "") return undefined;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) throw new Error(`${name} must be an integer from ${min} to ${max}`);
  return value;
}

function responseFormat() {
  const raw = $("json-schema").value.trim();
  if (!raw) return undefined;
  let schema;
  try {
    schema = JSON.parse(raw);
  } catch (err) {
    throw new Error(`the JSON schema is not valid JSON: ${err.message}`);
  }
  if (schema === null || typeof schema !== "object" || Array.isArray(schema)) throw new Error("the JSON schema must be a JSON object");
  return { type: "json_schema", json_schema: { schema } };
}

function generationOptions() {
  const temperature = Number($("temperature").value);
  if ($("temperature").value.trim() !== "" && !(Number.isFinite(temperature) && temperature >= 0)) {
    throw new Error("temperature must be a number >= 0");
  }
  return {
    max_tokens: intField("max-tokens", "max tokens", { min: 1 }),
    priority: intField("priority", "priority"),
    seed: intField("seed", "seed", { min: 0, max: Number.MAX_SAFE_INTEGER }),
    temperature: $("temperature").value.trim() === "" ? undefined : temperature,
    response_format: responseFormat(),
  };
}

async function sendPrompt() {
  let options;
  try {
    options = generationOptions();
  } catch (err) {
    showError({ code: "form", message: err.message });
    return;
  }
  const session = await ensureSession().catch(() => null);
  if (!session) return;
  // Items are referenced only once their chunks are on the wire: ahead of them they are unknown.
  await state.uploads;
  const parts = [];
  for (const [itemId, att] of state.attachments) if (att.row.included) parts.push({ type: "item", item_id: itemId });
  if (state.camera && $("camera-attach").checked) {
    const itemId = await state.camera.take();
    if (itemId) parts.push({ type: "item", item_id: itemId });
    else $("live-status").textContent = "the camera has no frame yet: sent without it";
  }
  if (state.mic && $("mic-attach").checked) {
    const itemId = state.mic.take();
    if (itemId) parts.push({ type: "item", item_id: itemId });
    else $("live-status").textContent = "the microphone has no audio yet: sent without it";
  }
  const prompt = $("prompt").value;
  if (prompt.trim()) parts.push({ type: "text", text: prompt });
  if (!parts.length) {
    showError({ code: "form", message: "write a prompt or attach something first" });
    return;
  }
  const content = parts.length === 1 && parts[0].type === "text" ? prompt : parts;
  const responseId = `r${++state.numResponses}-${Date.now().toString(36)}`;
  const numItems = parts.length - (prompt.trim() ? 1 : 0);
  const card = responseCard(responseId, prompt + (numItems ? `  [+${numItems} item${numItems > 1 ? "s" : ""}]` : ""),
    () => cancelResponse(responseId));
  state.responses.set(responseId, card);
  session.send({ type: "response.create", response_id: responseId, messages: [{ role: "user", content }], ...options });
  updateButtons();
}

function cancelResponse(responseId) {
  state.session?.send({ type: "response.cancel", response_id: responseId });
  state.responses.get(responseId)?.setStatus("cancelling", "cancelling…");
}

function cancelAll() {
  for (const responseId of state.responses.keys()) cancelResponse(responseId);
}

// ---- page

function updateButtons() {
  $("cancel").disabled = state.responses.size === 0;
  $("camera-toggle").textContent = state.camera ? "Stop camera" : "Start camera";
  $("mic-toggle").textContent = state.mic ? "Stop microphone" : "Start microphone";
}

function updateStats() {
  const s = state.session;
  const c = state.counters;
  const set = (id, v) => { const node = $(id); if (node.textContent !== String(v)) node.textContent = v; };
  set("stat-camera-frames", c.cameraFrames);
  set("stat-camera-bytes", formatBytes(c.cameraBytes));
  set("stat-mic-chunks", c.micChunks);
  set("stat-mic-seconds", (c.micSamples / 16000).toFixed(1));
  set("stat-frames-sent", s ? s.numFramesSent : 0);
  set("stat-bytes-sent", formatBytes(s ? s.numBytesSent : 0));
  set("stat-committed", state.numCommitted);
  set("stat-dropped", c.numDropped);
  $("mic-level").value = state.mic ? c.micLevel : 0;
  $("mic-level").dataset.peak = c.micPeakLevel.toFixed(4);
}

function setupDropZone() {
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    addFiles(e.dataTransfer.files);
  });
  $("file-input").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
}

function main() {
  $("server-url").value = defaultStreamUrl();
  $("connection").addEventListener("submit", (e) => {
    e.preventDefault();
    if (state.session) disconnect(); else ensureSession().catch(() => {});
  });
  $("prompt-form").addEventListener("submit", (e) => { e.preventDefault(); sendPrompt(); });
  $("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) sendPrompt(); });
  $("cancel").addEventListener("click", cancelAll);
  $("camera-toggle").addEventListener("click", toggleCamera);
  $("mic-toggle").addEventListener("click", toggleMic);
  setupDropZone();
  setupSamples();
  setInterval(updateStats, 200);
  ensureSession().catch(() => {});
}

main();
