// DOM pieces of the page: error lines, attachment rows and response cards. No protocol logic.

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Human-readable byte counts: 1.2 MB. */
export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / (1 << 20)).toFixed(1)} MB`;
}

/** Shows one error line at the top of the request panel; `error` is an error event's body. */
export function showError(error) {
  const parts = [error.code ? `${error.code}: ` : "", error.message || "unknown error"];
  const where = ["event_type", "field", "item_id", "response_id"]
    .filter((k) => error[k]).map((k) => `${k.replace("_", " ")} ${error[k]}`);
  if (where.length) parts.push(` (${where.join(", ")})`);
  const li = el("li");
  li.append(el("span", "", parts.join("")));
  const close = el("button", "", "×");
  close.type = "button";
  close.title = "dismiss";
  close.onclick = () => li.remove();
  li.append(close);
  const list = $("errors");
  list.prepend(li);
  while (list.children.length > 8) list.lastChild.remove();
}

/** A row in the attachment list for an uploaded file; returns handles to update it. */
export function attachmentRow(file, modality, onRemove) {
  const li = el("li");
  const include = el("input");
  include.type = "checkbox";
  include.checked = true;
  include.title = "attach to the next prompt";
  li.append(include);
  if (modality === "image") {
    const img = el("img");
    img.src = URL.createObjectURL(file);
    img.alt = "";
    li.append(img);
  }
  li.append(el("span", "name", `${file.name} · ${modality} · ${formatBytes(file.size)}`));
  const status = el("span", "status", "waiting");
  li.append(status);
  const remove = el("button", "", "remove");
  remove.type = "button";
  remove.onclick = () => { li.remove(); onRemove(); };
  li.append(remove);
  $("attachments").append(li);
  return {
    li,
    get included() { return include.checked && !li.classList.contains("failed"); },
    setStatus(text, failed = false) { status.textContent = text; li.classList.toggle("failed", failed); },
  };
}

/** A card for one response: its prompt, streamed text, status and usage. */
export function responseCard(responseId, promptText, onCancel) {
  const card = el("div", "response");
  card.dataset.responseId = responseId;
  card.dataset.status = "sent";
  const head = el("div", "head");
  head.append(el("span", "", responseId));
  const status = el("span", "status", "sent");
  head.append(status);
  const cancel = el("button", "cancel", "cancel");
  cancel.type = "button";
  cancel.onclick = onCancel;
  head.append(cancel);
  const text = el("div", "text");
  const textNode = document.createTextNode("");
  text.append(textNode);
  const usage = el("div", "usage");
  card.append(head, el("div", "prompt", promptText), text, usage);
  $("responses").prepend(card);
  return {
    card,
    get isDone() { return cancel.disabled; },
    append(delta) {
      const atBottom = text.scrollTop + text.clientHeight >= text.scrollHeight - 4;
      textNode.appendData(delta);
      if (atBottom) text.scrollTop = text.scrollHeight;
    },
    setStatus(state, label = state) { card.dataset.status = state; status.textContent = label; },
    finish(state, label, usageText = "") {
      this.setStatus(state, label);
      usage.textContent = usageText;
      cancel.disabled = true;
    },
  };
}

/** Adds a server event to the event log (newest last, at most 200 kept). */
export function logEvent(event) {
  const li = el("li", "", JSON.stringify(event, (key, value) => (value instanceof Uint8Array ? `<${value.length} bytes>` : value)));
  li.dataset.type = event.type;
  const list = $("event-log");
  list.append(li);
  while (list.children.length > 200) list.firstChild.remove();
  list.scrollTop = list.scrollHeight;
}
