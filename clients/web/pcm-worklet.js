// AudioWorklet processor: mono PCM16 little-endian at `targetRate` (16 kHz) from the context's rate.
// Posts {pcm: ArrayBuffer of chunkSamples s16le samples, rms: float} to the main thread.
//
// Downsampling averages the input over each output sample's span (a box filter, enough to keep
// speech clear); upsampling interpolates linearly. Channels are averaged to mono first.

class Pcm16Writer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.targetRate = opts.targetRate || 16000;
    this.chunkSamples = opts.chunkSamples || 1600;
    this.step = sampleRate / this.targetRate;  // input samples per output sample
    this.pos = 0;      // where the next output sample starts, in input samples from `carry`'s start
    this.carry = new Float32Array(0);  // input not consumed yet
    this.out = new DataView(new ArrayBuffer(this.chunkSamples * 2));
    this.numOut = 0;
    this.sumSquares = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length) this.consume(mono(channels));
    return true;
  }

  consume(block) {
    const input = new Float32Array(this.carry.length + block.length);
    input.set(this.carry);
    input.set(block, this.carry.length);
    let pos = this.pos;
    if (this.step >= 1) {
      while (pos + this.step <= input.length) {
        const start = Math.floor(pos);
        const end = Math.floor(pos + this.step);
        let sum = 0;
        for (let i = start; i < end; i++) sum += input[i];
        this.emit(sum / Math.max(1, end - start));
        pos += this.step;
      }
    } else {
      while (pos + 1 < input.length) {
        const i = Math.floor(pos);
        const frac = pos - i;
        this.emit(input[i] * (1 - frac) + input[i + 1] * frac);
        pos += this.step;
      }
    }
    const keep = Math.floor(pos);
    this.carry = input.slice(keep);
    this.pos = pos - keep;
  }

  emit(sample) {
    const clipped = Math.max(-1, Math.min(1, sample));
    this.out.setInt16(this.numOut * 2, Math.round(clipped * 32767), true);
    this.sumSquares += clipped * clipped;
    if (++this.numOut === this.chunkSamples) this.flush();
  }

  flush() {
    if (this.numOut === 0) return;
    const pcm = this.out.buffer.slice(0, this.numOut * 2);
    const rms = Math.sqrt(this.sumSquares / this.numOut);
    this.port.postMessage({ pcm, rms }, [pcm]);
    this.numOut = 0;
    this.sumSquares = 0;
  }
}

function mono(channels) {
  if (channels.length === 1) return channels[0];
  const out = new Float32Array(channels[0].length);
  for (const ch of channels) for (let i = 0; i < out.length; i++) out[i] += ch[i] / channels.length;
  return out;
}

registerProcessor("pcm16-writer", Pcm16Writer);
