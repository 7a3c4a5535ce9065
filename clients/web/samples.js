// Sample media for the demo models (docs/demo-model.md), made in the page: shapes drawn on a
// canvas (a PNG image, or a JPEG sequence of a shape moving), and tones, chirps and beeps as WAV.
// They look and sound like the training data of tools/demo_data.py, so the demo models answer.

const COLORS = {
  red: [215, 35, 35], green: [40, 160, 60], blue: [35, 75, 215],
  yellow: [235, 200, 30], purple: [135, 55, 175], orange: [240, 125, 25],
};
const POSITIONS = { center: [0.5, 0.5], left: [0.25, 0.5], right: [0.75, 0.5], top: [0.5, 0.25], bottom: [0.5, 0.75] };
const DIRECTIONS = { left: [-1, 0], right: [1, 0], up: [0, -1], down: [0, 1] };
const RATE = 16000;

function drawShape(ctx, shape, color, cx, cy, r) {
  ctx.fillStyle = `rgb(${COLORS[color].join(",")})`;
  ctx.beginPath();
  const poly = (points) => {
    points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
  };
  if (shape === "circle") ctx.arc(cx, cy, r, 0, 2 * Math.PI);
  else if (shape === "square") ctx.rect(cx - 0.85 * r, cy - 0.85 * r, 1.7 * r, 1.7 * r);
  else if (shape === "triangle") poly([[cx, cy - r], [cx - 0.95 * r, cy + 0.7 * r], [cx + 0.95 * r, cy + 0.7 * r]]);
  else if (shape === "diamond") poly([[cx, cy - r], [cx + 0.8 * r, cy], [cx, cy + r], [cx - 0.8 * r, cy]]);
  else if (shape === "cross") {
    const t = 0.36 * r;
    ctx.rect(cx - r, cy - t, 2 * r, 2 * t);
    ctx.rect(cx - t, cy - r, 2 * t, 2 * r);
  }
  ctx.fill();
}

function frame(size, draw) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = size;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "rgb(240,240,240)";
  ctx.fillRect(0, 0, size, size);
  draw(ctx);
  return canvas;
}

const toBlob = (canvas, type, quality) => new Promise((resolve) => canvas.toBlob(resolve, type, quality));

/** A PNG of one shape: e.g. shapeImage("circle", "red", "left"). */
export async function shapeImage(shape, color, position = "center", size = 96) {
  const [fx, fy] = POSITIONS[position];
  const canvas = frame(size, (ctx) => drawShape(ctx, shape, color, fx * size, fy * size, 0.19 * size));
  return new File([await toBlob(canvas, "image/png")], `${color}-${shape}-${position}.png`, { type: "image/png" });
}

/** Two seconds of a shape crossing the frame, as a JPEG sequence at 8 frames/s (the camera's format). */
export async function movingShapeVideo(shape, color, direction, size = 64, fps = 8, seconds = 2) {
  const [dx, dy] = DIRECTIONS[direction];
  const numFrames = fps * seconds;
  const jpegs = [];
  for (let i = 0; i < numFrames; i++) {
    let along = 0.22 + (0.56 * i) / (numFrames - 1);
    if (dx + dy < 0) along = 1 - along;
    const [x, y] = dx ? [along, 0.5] : [0.5, along];
    jpegs.push(await toBlob(frame(size, (ctx) => drawShape(ctx, shape, color, x * size, y * size, 0.15 * size)),
      "image/jpeg", 0.9));
  }
  return new File(jpegs, `${color}-${shape}-moving-${direction}.mjpeg`, { type: `image/jpeg;fps=${fps}` });
}

function wav(samples) {
  const bytes = new DataView(new ArrayBuffer(44 + 2 * samples.length));
  const text = (offset, s) => [...s].forEach((c, i) => bytes.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF"); bytes.setUint32(4, 36 + 2 * samples.length, true); text(8, "WAVEfmt ");
  bytes.setUint32(16, 16, true); bytes.setUint16(20, 1, true); bytes.setUint16(22, 1, true);
  bytes.setUint32(24, RATE, true); bytes.setUint32(28, 2 * RATE, true); bytes.setUint16(32, 2, true);
  bytes.setUint16(34, 16, true); text(36, "data"); bytes.setUint32(40, 2 * samples.length, true);
  samples.forEach((v, i) => bytes.setInt16(44 + 2 * i, Math.round(Math.max(-1, Math.min(1, v)) * 32767), true));
  return bytes.buffer;
}

/**
 * 1.5 s of sound as a 16 kHz WAV: sound("tone", 440), sound("chirp", "rising"), sound("beeps", 3).
 */
export function sound(kind, value, seconds = 1.5) {
  const n = Math.round(seconds * RATE);
  const samples = new Float32Array(n);
  const [f0, f1] = value === "falling" ? [1800, 300] : [300, 1800];
  const k = Math.log(f1 / f0) / seconds;
  for (let i = 0; i < n; i++) {
    const t = i / RATE;
    let v;
    if (kind === "tone") v = Math.sin(2 * Math.PI * value * t);
    else if (kind === "chirp") v = Math.sin((2 * Math.PI * f0 * Math.expm1(k * t)) / k);
    else {
      const slot = (t / seconds) * value - 0.25;  // beep i starts at (i + 0.25) * seconds / count
      v = slot >= 0 && slot % 1 < (0.11 * value) / seconds ? Math.sin(2 * Math.PI * 1000 * t) : 0;
    }
    samples[i] = 0.5 * v * Math.min(1, t / 0.01, (seconds - t) / 0.01);
  }
  const name = kind === "tone" ? `tone-${value}hz` : `${kind}-${value}`;
  return new File([wav(samples)], `${name}.wav`, { type: "audio/wav" });
}

/** The page's sample buttons: a label, the file it attaches and the question it fills in. */
export const SAMPLES = [
  { label: "red circle", make: () => shapeImage("circle", "red", "left"), prompt: "What is in the image?" },
  { label: "green triangle as JSON", make: () => shapeImage("triangle", "green", "top"),
    prompt: "Describe the image as JSON." },
  { label: "blue square moving right", make: () => movingShapeVideo("square", "blue", "right"),
    prompt: "What happens in the video?" },
  { label: "440 Hz tone", make: () => sound("tone", 440), prompt: "What do you hear?" },
  { label: "880 Hz tone", make: () => sound("tone", 880), prompt: "What do you hear?" },
  { label: "rising chirp", make: () => sound("chirp", "rising"), prompt: "What do you hear?" },
  { label: "three beeps", make: () => sound("beeps", 3), prompt: "How many beeps are there?" },
];
