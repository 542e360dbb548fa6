/*
 * The guide's browser client, the part every rtkit page shares: the broker's demo page (`GET /` on the
 * broker, which serves this file at /static/realtime.js) and the notebook's BrowserCall widget (whose
 * module is this file followed by static/browser_call.js: anywidget loads one module, with no imports).
 *
 *   PageCall            one Realtime call at a time from this page: what both pages do, each keeping only its UI
 *                       (and the broker page its keys and reconnection: in a notebook the kernel runs those)
 *     .open()           the microphone, then a session over WebRTC or the WebSocket ("auto": WebRTC, else or when
 *                       it cannot be set up the WebSocket); resolves once the server said `session.created`
 *     .measure()        the microphone's and the model's levels;  .readStats()  the WebRTC connection's getStats()
 *     .interrupt()      barge-in: playback stopped, the reply cut to what was played (Playout)
 *     .recording()      both sides as the page sent and played them, on its AudioContext's clock (Recorder)
 *   openMicrophone()    getUserMedia with echo cancellation; refusals as CallError in plain words
 *   openWebRTC()        microphone track + "oai-events" data channel; the SDP offer POSTed to
 *                       `${baseUrl}/realtime/calls` with the ek_ key, the answer applied
 *   openWebSocket()     the same call over a WebSocket: the key rides in a subprotocol, audio is base64 PCM16
 *   PcmPlayer, captureMicrophone()   that transport's audio, at 24 kHz
 *   Recorder            the microphone as sent and the reply as played, whatever the transport, and where the
 *                       server's VAD placed each utterance: what the kernel's record_audio(call) asks for
 *
 * Each transport calls on.event(serverEvent) and on.lost(reason), and returns {name, send(event), close()}.
 * Plain ES2020, no build step.
 */

export const PCM_RATE = 24000; //              the Realtime API's PCM rate (WebSocket transport)
export const DISCONNECTED_GRACE_MS = 5000; //  "disconnected" often heals by itself; the official client waits 5 s

/**
 * A failure a page can explain: `message` is for people, `hint` says what to do, `code` names it for code
 * (rtkit's error codes, or "http" for a refusal of POST /calls with its `status`, `body` and `retryAfter` s).
 */
export class CallError extends Error {
  constructor(code, message, { hint = null, status = null, body = null, retryAfter = null } = {}) {
    super(message);
    Object.assign(this, { code, hint, status, body, retryAfter });
  }

  /** A key the API refused (expired on the way, say): worth exactly one fresh key. */
  get keyRefused() {
    return this.status === 401;
  }

  report() {
    const { code, message, hint, status, body, retryAfter } = this;
    return { code, message, hint, status, body, retryAfter };
  }
}

// ---- the microphone --------------------------------------------------------------------------------

/** `retry` ends each hint: how to try again on this page ("press Connect again"). */
export async function openMicrophone(retry) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new CallError("microphone_unavailable", "This page cannot use a microphone: it is not a secure context.", {
      hint: "open it over https, or on localhost / 127.0.0.1",
    });
  }
  try {
    // Echo cancellation keeps the model from hearing (and answering) its own voice from the speakers.
    return await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
  } catch (err) {
    throw microphoneError(err, retry);
  }
}

function microphoneError(err, retry) {
  if (err.name === "NotAllowedError" || err.name === "SecurityError") {
    return new CallError(
      "microphone_denied",
      "Microphone access is blocked for this page. Click the microphone (or lock) icon in the address bar " +
        "and allow the microphone for this site.",
      { hint: retry },
    );
  }
  if (err.name === "NotFoundError" || err.name === "OverconstrainedError") {
    return new CallError("microphone_unavailable", "No microphone was found on this computer.", {
      hint: `plug one in or enable it in the system's sound settings, ${retry}`,
    });
  }
  if (err.name === "NotReadableError") {
    return new CallError("microphone_unavailable", "The microphone is busy: another application is using it.", {
      hint: `close the other application, ${retry}`,
    });
  }
  return new CallError("microphone_unavailable", `The microphone could not be opened: ${err.message}`, { hint: retry });
}

// ---- WebRTC ----------------------------------------------------------------------------------------

/**
 * One WebRTC call. `onTrack(stream)` gets the model's voice; `timings` collects offer_ms, answer_ms,
 * connected_ms and channel_open_ms from the start; `headers` go with the offer (a proxy's own, never a key's).
 * Resolves once the answer is applied.
 */
export async function openWebRTC({
  baseUrl,
  key,
  mic,
  onTrack,
  on,
  timings = {},
  headers = {},
  graceMs = DISCONNECTED_GRACE_MS,
}) {
  const t0 = performance.now();
  const since = () => Math.round((performance.now() - t0) * 10) / 10;
  // No iceServers: the service's answer carries its own candidates and learns the browser's address from
  // its connectivity checks (the OpenAI docs use a bare RTCPeerConnection too; on loopback STUN only slows).
  const pc = new RTCPeerConnection();
  pc.addTrack(mic.getAudioTracks()[0], mic);
  pc.ontrack = (e) => onTrack(e.streams[0]);
  const dc = pc.createDataChannel("oai-events");
  dc.onopen = () => (timings.channel_open_ms = since());
  dc.onmessage = (e) => on.event(JSON.parse(e.data));
  dc.onclose = () => on.lost("the data channel closed");
  let grace = null;
  pc.onconnectionstatechange = () => {
    clearTimeout(grace);
    const state = pc.connectionState;
    if (state === "connected" && !timings.connected_ms) {
      timings.connected_ms = since();
      if (on.sending) on.sending(undefined, pc); // the microphone's frames go out from now on
    }
    if (state === "failed" || state === "closed") on.lost(`the peer connection ${state}`);
    if (state === "disconnected") {
      grace = setTimeout(() => on.lost(`the peer connection stayed disconnected for ${graceMs} ms`), graceMs);
    }
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    timings.offer_ms = since();
    let res;
    try {
      res = await fetch(`${baseUrl}/realtime/calls`, {
        method: "POST",
        body: pc.localDescription.sdp,
        headers: { ...headers, Authorization: `Bearer ${key}`, "Content-Type": "application/sdp" },
      });
    } catch {
      throw new CallError("upstream_unreachable", `The Realtime API at ${baseUrl} cannot be reached from this browser.`, {
        // A refused CORS preflight looks exactly like a network failure to the page.
        hint: "check the address; on another origin its CORS must allow this page (the emulator's cors_origins)",
      });
    }
    // An error body is JSON, never SDP: read it as such, or the user sees "Failed to parse SessionDescription".
    const body = await res.text();
    if (!res.ok) {
      throw new CallError("http", `The Realtime API refused the call (HTTP ${res.status}): ${apiMessage(body)}`, {
        status: res.status,
        body,
        retryAfter: res.headers.get("Retry-After"),
      });
    }
    timings.answer_ms = since();
    await pc.setRemoteDescription({ type: "answer", sdp: body });
  } catch (err) {
    dc.onclose = pc.onconnectionstatechange = null; // a call that never opened is not a lost one
    pc.close();
    throw err;
  }
  const send = (event) => dc.readyState === "open" && dc.send(JSON.stringify(event));
  return { name: "webrtc", pc, send, close: () => pc.close() };
}

/** The API's `{"error": {"message": ...}}`, or the body as it came. */
function apiMessage(body) {
  try {
    return JSON.parse(body).error.message;
  } catch {
    return body;
  }
}

// ---- WebSocket -------------------------------------------------------------------------------------

/**
 * The same call over a WebSocket. `capture(onChunk)` starts sending the microphone (see captureMicrophone)
 * and resolves to a function that stops it; `onAudio(base64, event)` plays the model's voice (the delta event
 * says whose it is). A silent drop goes unnoticed here: browsers neither expose nor send WebSocket pings.
 */
export function openWebSocket({ baseUrl, model, key, on, capture, onAudio }) {
  // Browsers cannot set headers on a WebSocket: the key rides in a subprotocol, next to "realtime".
  const url = `${baseUrl.replace(/^http/, "ws")}/realtime?model=${encodeURIComponent(model)}`;
  const ws = new WebSocket(url, ["realtime", `openai-insecure-api-key.${key}`]);
  const send = (event) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(event));
  let stopCapture = () => {};
  ws.onopen = async () => {
    stopCapture = await capture((audio) => send({ type: "input_audio_buffer.append", audio }));
    if (ws.readyState !== WebSocket.OPEN) stopCapture(); // closed while the worklet loaded
  };
  ws.onmessage = (e) => {
    const event = JSON.parse(e.data);
    if (event.type === "response.output_audio.delta") onAudio(event.delta, event);
    on.event(event);
  };
  // A refused key looks like any other failed upgrade here (code 1006): browsers hide the HTTP status.
  ws.onclose = (e) => {
    stopCapture();
    on.lost(`the WebSocket closed (code ${e.code})`);
  };
  return {
    name: "websocket",
    send,
    close: () => {
      ws.onclose = null;
      stopCapture();
      ws.close();
    },
  };
}

/** The model's voice as base64 PCM16 chunks, queued back to back; `output` is the node to meter. */
export class PcmPlayer {
  constructor(context) {
    this.context = context;
    this.output = context.createGain();
    this.output.connect(context.destination);
    this.playing = new Set();
    this.playhead = 0;
  }

  /** Queue one chunk; returns when it will play, on the context's clock: {start, end} in seconds. */
  play(base64) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const pcm = new Int16Array(bytes.buffer);
    const buffer = this.context.createBuffer(1, pcm.length, PCM_RATE);
    buffer.getChannelData(0).set(Float32Array.from(pcm, (x) => x / 32768));
    const node = this.context.createBufferSource();
    node.buffer = buffer;
    node.connect(this.output);
    this.playhead = Math.max(this.playhead, this.context.currentTime);
    node.start(this.playhead);
    const start = this.playhead;
    this.playhead += buffer.duration;
    this.playing.add(node);
    node.onended = () => this.playing.delete(node);
    return { start, end: this.playhead };
  }

  /** Barge-in: silence what is queued. */
  stop() {
    this.playing.forEach((node) => node.stop());
    this.playing.clear();
    this.playhead = 0;
  }
}

// On the audio thread, from the context's rate down to 24 kHz: each output sample is the mean of the input
// samples in its 1/24000 s (a context at 24 kHz passes them through). Both worklets below start with it.
const TO_24K = `
class To24k {
  constructor() { this.step = sampleRate / ${PCM_RATE}; this.sum = 0; this.count = 0; this.seen = 0; this.next = this.step; }
  push(x) { // one input sample in; out: a PCM16 sample, or null
    this.sum += x; this.count++; this.seen++;
    if (this.seen < this.next) return null;
    this.next += this.step;
    const y = Math.max(-1, Math.min(1, this.sum / this.count)) * 32767;
    this.sum = 0; this.count = 0;
    return y;
  }
}`;

// The microphone goes up as base64 PCM16 in 100 ms chunks, cut on the audio thread, each with the context time
// of its first sample.
const CAPTURE_CHUNK = PCM_RATE / 10;
const CAPTURE_WORKLET = `${TO_24K}
registerProcessor("pcm16-chunks", class extends AudioWorkletProcessor {
  constructor() { super(); this.to24k = new To24k(); this.chunk = new Int16Array(${CAPTURE_CHUNK}); this.n = 0; this.t = null; this.frame = null; }
  push(x, frame) {
    if (this.t === null) this.t = frame / sampleRate;
    const y = this.to24k.push(x);
    if (y === null) return;
    this.chunk[this.n++] = y;
    if (this.n === this.chunk.length) {
      this.port.postMessage({ pcm: this.chunk.slice(), start: this.t });
      this.n = 0;
      this.t = null;
    }
  }
  process([input]) {
    // The server counts samples, the recorder places them by the context's clock: a quantum without input (the
    // track muted or just connected) or one this node was not asked to render is sent as silence, else the
    // server's input stream fell 10 or 20 ms behind the page's clock.
    if (this.frame !== null) for (let f = this.frame; f < currentFrame; f++) this.push(0, f);
    const samples = input[0] || this.silence || (this.silence = new Float32Array(128));
    for (let i = 0; i < samples.length; i++) this.push(samples[i], currentFrame + i);
    this.frame = currentFrame + samples.length;
    return true;
  }
});`;
const workletModules = new WeakMap(); // AudioContext -> the promise of its loaded worklet

/**
 * Send `mic` (a MediaStream, or the page's node of it) as 24 kHz chunks through `context` (the page's, at any
 * rate): `onChunk(base64, start)`, with `start` the context time of the chunk's first sample. Resolves to a stop
 * function. Give it the node the recorder listens to: each MediaStreamAudioSourceNode of a track has its own
 * FIFO, and two of them were measured 10 or 20 ms apart, which put the server's input stream that far off the
 * recording's left channel.
 */
export async function captureMicrophone(context, mic, onChunk) {
  if (!workletModules.has(context)) {
    const url = URL.createObjectURL(new Blob([CAPTURE_WORKLET], { type: "text/javascript" }));
    workletModules.set(context, context.audioWorklet.addModule(url));
  }
  await workletModules.get(context);
  const source = mic instanceof AudioNode ? mic : context.createMediaStreamSource(mic);
  // No outputs: Chromium runs such a node without connecting it to the speakers.
  const node = new AudioWorkletNode(context, "pcm16-chunks", { numberOfOutputs: 0 });
  node.port.onmessage = ({ data }) => {
    let binary = "";
    for (const byte of new Uint8Array(data.pcm.buffer)) binary += String.fromCharCode(byte);
    onChunk(btoa(binary), data.start);
  };
  source.connect(node);
  return () => source.disconnect(node); // only that edge: the page's meter and recorder listen to it too
}

// ---- recording both sides --------------------------------------------------------------------------

// Both sides on the page's AudioContext clock: input 0 is the microphone as sent, input 1 the reply as played.
// Each is averaged down to 24 kHz PCM16 on the audio thread and posted in 100 ms chunks with the context time of
// their first sample; {flush: true} posts what is pending at once.
const RECORDER_WORKLET = `${TO_24K}
registerProcessor("rtkit-recorder", class extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = ${PCM_RATE / 10};
    this.sides = [new To24k(), new To24k()];
    this.on = false;
    this.fresh();
    this.port.onmessage = ({ data }) => {
      if ("on" in data) this.on = data.on;
      if (data.flush || data.on === false) this.post();
      if (data.flush) this.port.postMessage({ flushed: true });
    };
  }
  fresh() {
    this.left = new Int16Array(this.size); this.right = new Int16Array(this.size); this.n = 0; this.t = null;
  }
  post() {
    if (this.n) this.port.postMessage({ t: this.t, left: this.left.slice(0, this.n), right: this.right.slice(0, this.n) });
    this.fresh();
  }
  take(x, y, frame) {
    if (this.t === null) this.t = frame / sampleRate;
    const l = this.sides[0].push(x), r = this.sides[1].push(y);
    if (l === null) return;
    this.left[this.n] = l; this.right[this.n] = r;
    if (++this.n === this.size) this.post();
  }
  process([mic, played]) {
    if (!this.on) { this.frame = null; return true; }
    // Quanta this node was not asked to render are silence on both sides, as the capture worklet sends them.
    if (this.frame != null) for (let f = this.frame; f < currentFrame; f++) this.take(0, 0, f);
    const a = mic[0], b = played[0], frames = (a || b || []).length || 128;
    for (let i = 0; i < frames; i++) this.take(a ? a[i] : 0, b ? b[i] : 0, currentFrame + i);
    this.frame = currentFrame + frames;
    return true;
  }
});`;

const RTP_PACKET_S = 0.02; // Chromium's Opus packets: 20 ms each, sent as they are captured (no DTX)
const ORIGIN_WINDOW_S = 2; // packet counts taken later may include gaps (a stalled network)
const ORIGIN_POLL_MS = 150; // 13 readings: the least of them within ~1.5 ms of its floor (see packetsSent)
// From the floor of `t - packets × 20 ms` to the page time of the server's first decoded sample: the packet's
// own 20 ms, less how much later the page's graph renders the microphone than WebRTC captures it, plus Opus's
// 6.5 ms look-ahead. Not observable from the page: measured against the emulator's decoded input (the test
// tests/widgets/cells/recording.py), 12.3 to 17.2 ms in 10 of 11 runs (7.1 once): the graph's share varies.
const RTP_ORIGIN_LAG_S = 0.013;
export const RECORD_KEEP_S = 300; // the page keeps the last five minutes of its calls: 24 kHz stereo, 29 MB

/**
 * What the page sent and played, on its AudioContext's clock: the microphone as sent (muted: silence) and the
 * reply as it reached the speaker (a barge-in's cut included), so the two sides are aligned by construction.
 * It also notes, on that clock, where each connection's input stream began (the server's VAD counts
 * `audio_start_ms` from its first frame), each user utterance the VAD placed, and each reply item's playback.
 * `handOver()` gives it all as 24 kHz PCM16 from the oldest sample kept.
 */
export class Recorder {
  constructor(context) {
    this.context = context;
    this.chunks = []; //  {t, left, right}: t is the context time of the chunk's first sample
    this.origins = []; // {t, transport, best}: the first frame each connection sent (best: from getStats)
    this.users = new Map(); //   item id -> {origin, startMs, endMs}: the user's speech where the VAD placed it
    this.replies = new Map(); // item id -> {start, end}: each reply item's playback
    this.mic = this.played = null; // the nodes feeding inputs 0 and 1
    this.flushes = [];
    this.node = null;
    if (!recorderModules.has(context)) {
      const url = URL.createObjectURL(new Blob([RECORDER_WORKLET], { type: "text/javascript" }));
      recorderModules.set(context, context.audioWorklet.addModule(url));
    }
    this.ready = recorderModules.get(context).then(() => {
      // Two inputs, no outputs: Chromium runs it without a path to the speakers.
      this.node = new AudioWorkletNode(context, "rtkit-recorder", { numberOfInputs: 2, numberOfOutputs: 0 });
      this.node.port.onmessage = ({ data }) => (data.left ? this.keep(data) : this.flushes.shift()?.());
      if (this.mic) this.mic.connect(this.node, 0, 0);
      if (this.played) this.played.connect(this.node, 0, 1);
      this.node.port.postMessage({ on: Boolean(this.mic || this.played) });
    });
  }

  /** The reply's node (input 1; null for none). */
  play(played) {
    if (played !== this.played) this.connect("played", played, 1);
  }

  /** The call is over: nothing is sent or played until the next connection's first frame. */
  pause() {
    this.connect("mic", null, 0);
    this.connect("played", null, 1);
  }

  connect(which, node, input) {
    if (this[which] && this.node) this[which].disconnect(this.node, 0, input);
    this[which] = node;
    if (node && this.node) node.connect(this.node, 0, input);
    if (this.node) this.node.port.postMessage({ on: Boolean(this.mic || this.played) });
  }

  keep({ t, left, right }) {
    this.chunks.push({ t, left, right });
    const horizon = t - RECORD_KEEP_S;
    while (this.chunks.length && this.chunks[0].t < horizon) this.chunks.shift();
  }

  /** The microphone's node (input 0): recorded from now on, as a connection is about to send it. */
  microphone(mic) {
    if (mic !== this.mic) this.connect("mic", mic, 0);
  }

  /**
   * A connection sent its first input frame at `t` on the context's clock (the microphone is recorded); for
   * WebRTC, `pc` is the connection whose packets place it better (see packetsSent).
   */
  sending(transport, mic, t = this.context.currentTime, pc = null) {
    this.microphone(mic);
    const origin = { t, transport, best: null };
    this.origins.push(origin);
    if (pc) this.countPackets(pc, origin);
  }

  /**
   * Read the connection's packet count every ORIGIN_POLL_MS for its first ORIGIN_WINDOW_S (see packetsSent):
   * the widget's once-a-second getStats gave 2 to 4 readings, whose least was up to 10 ms off its floor.
   */
  async countPackets(pc, origin) {
    const sender = pc.getSenders().find((s) => s.track && s.track.kind === "audio");
    while (sender && pc.connectionState === "connected" && this.origins[this.origins.length - 1] === origin) {
      const report = await sender.getStats();
      // A stats object's timestamp is on the clock of performance.timeOrigin + performance.now().
      const now = this.context.currentTime;
      const age = (ms) => (performance.timeOrigin + performance.now() - ms) / 1000;
      report.forEach((s) => s.type === "outbound-rtp" && this.packetsSent(now - age(s.timestamp), s.packetsSent));
      if (now - origin.t > ORIGIN_WINDOW_S) return;
      await new Promise((resolve) => setTimeout(resolve, ORIGIN_POLL_MS));
    }
  }

  /**
   * WebRTC: `packets` 20 ms packets had gone out at `t` (getStats). `t - packets × 20 ms` is where the input
   * stream began plus how long its latest packet has waited (0 to 20 ms) plus a fixed lag: its least over
   * the first seconds, a reading just after a packet went out, is that lag from the origin (RTP_ORIGIN_LAG_S).
   * The moment the connection came up was -16 to +14 ms off; this, measured over 9 runs, -8.9 to +3.4 ms.
   */
  packetsSent(t, packets) {
    const origin = this.origins[this.origins.length - 1];
    if (!origin || origin.transport !== "webrtc" || !packets || t - origin.t > ORIGIN_WINDOW_S) return;
    origin.best = Math.min(origin.best ?? Infinity, t - packets * RTP_PACKET_S);
  }

  /** The server's VAD placed the user's speech at `audio_start_ms`..`audio_end_ms` of the connection's input. */
  event(event) {
    const origin = this.origins.length - 1;
    if (origin < 0) return;
    if (event.type === "input_audio_buffer.speech_started") {
      this.users.set(event.item_id, { origin, startMs: event.audio_start_ms, endMs: null });
    } else if (event.type === "input_audio_buffer.speech_stopped" && this.users.has(event.item_id)) {
      this.users.get(event.item_id).endMs = event.audio_end_ms;
    }
  }

  /**
   * A reply item plays from `start` to `end`: a WebSocket chunk's schedule, or over WebRTC from the server's
   * `output_audio_buffer.started` with no end (null: its track's sound ends by itself, the jitter buffer played).
   */
  replied(itemId, start, end = null) {
    const span = this.replies.get(itemId);
    if (!span) this.replies.set(itemId, { start, end });
    else if (end !== null && span.end !== null) span.end = Math.max(span.end, end);
  }

  /** A barge-in stopped playback at `t`: nothing scheduled after it is heard. */
  cut(t) {
    for (const span of this.replies.values()) {
      if (span.end !== null) span.end = Math.min(span.end, Math.max(span.start, t));
    }
  }

  /** Everything kept, as one stretch from its oldest sample (gaps as silence): PCM16 at 24 kHz per side. */
  async handOver() {
    await this.ready;
    await new Promise((resolve) => {
      this.flushes.push(resolve);
      this.node.port.postMessage({ flush: true });
      setTimeout(resolve, 500); // a suspended context renders nothing: hand over what was posted
    });
    const start = this.chunks.length ? this.chunks[0].t : this.context.currentTime;
    const last = this.chunks[this.chunks.length - 1];
    const samples = last ? Math.round((last.t - start) * PCM_RATE) + last.left.length : 0;
    const left = new Int16Array(samples);
    const right = new Int16Array(samples);
    for (const chunk of this.chunks) {
      const at = Math.round((chunk.t - start) * PCM_RATE);
      const n = Math.min(chunk.left.length, samples - at);
      left.set(chunk.left.subarray(0, n), at);
      right.set(chunk.right.subarray(0, n), at);
    }
    const origins = this.origins.map(({ t, transport, best }) => ({ t: best === null ? t : best + RTP_ORIGIN_LAG_S, transport }));
    const users = [...this.users].map(([item_id, { origin, startMs, endMs }]) => ({
      item_id,
      start: origins[origin].t + startMs / 1000,
      end: endMs === null ? null : origins[origin].t + endMs / 1000,
    }));
    return {
      rate: PCM_RATE,
      start,
      now: this.context.currentTime,
      // What was rendered reaches the speaker this much later (a barge-in's played_ms counts to the ear).
      outputLatency: this.context.outputLatency || 0,
      origins,
      users,
      replies: [...this.replies].map(([item_id, { start, end }]) => ({ item_id, start, end })),
      left,
      right,
    };
  }

  close() {
    this.pause();
    if (this.node) this.node.port.onmessage = null;
    this.flushes.splice(0).forEach((resolve) => resolve());
  }
}
const recorderModules = new WeakMap(); // AudioContext -> the promise of its loaded recorder worklet

// ---- the call a page makes -------------------------------------------------------------------------

export const SESSION_START_MS = 10000; // per transport: "auto" may still try the WebSocket after WebRTC

/**
 * One Realtime call at a time from this page, with its media: what the broker's demo page and the notebook's
 * BrowserCall both do. A page keeps its UI, and where the keys come from and when to reconnect: `open` is one
 * attempt with one key, and `onLost` says the open call is gone (already hung up here).
 *
 * `retry` ends a microphone failure's hint ("press Connect again"); `bargeIn`: speaking over a reply stops it
 * and cuts it to what was played (else replies play out). Callbacks: onEvent(serverEvent) for every event of the
 * call; onLost(reason); onNotice({type: "rtkit.…", message, …}); onBargeIn(record) with what was played (the
 * fields of rtkit's `rtkit.barge_in` event); onTranscript(text), the reply's transcript so far.
 */
export class PageCall {
  constructor({
    retry,
    bargeIn = true,
    onEvent = () => {},
    onLost = () => {},
    onNotice = () => {},
    onBargeIn = () => {},
    onTranscript = () => {},
  }) {
    Object.assign(this, { retry, bargeIn, onEvent, onLost, onNotice, onBargeIn, onTranscript });
    this.conn = null; //       the open transport: {name, send(event), close(), pc?}
    this.generation = 0; //    bumped by each open and hang-up: an older attempt's call is closed, its events dropped
    this.mic = null; //        the microphone's MediaStream, kept across reconnections
    this.muted = false;
    this.audio = null; //      the AudioContext behind meters, capture, playback and the recorder: the page's clock
    this.pcmPlayer = null;
    this.meters = {}; //       direction -> {source, analyser, samples}
    this.stats = null; //      the latest readStats()
    this.rawStats = null;
    this.transcript = "";
    this.recorder = null; //   both sides of the calls, from the first (see Recorder)
    this.playout = new Playout(); // what is playing of the model's reply, for barge-in
    // Detached, but playing: Chromium's Web Audio reads a remote WebRTC stream only while a media element plays it.
    this.player = new Audio();
    this.player.autoplay = true;
  }

  /**
   * The microphone, then a session over `transport` ("webrtc", "websocket", or "auto": WebRTC where the browser
   * has it, else or when its connection cannot be set up the WebSocket). Resolves to the open transport once the
   * server said `session.created`, or to null when the page hung up or opened again meanwhile; rejects with a
   * CallError. `timings` collects WebRTC's offer_ms, answer_ms, connected_ms, channel_open_ms.
   */
  async open({ transport = "auto", baseUrl, model, key, headers = {}, timings = {}, timeoutMs = SESSION_START_MS }) {
    const mine = ++this.generation;
    await this.openMicrophone();
    let order = transport === "auto" ? ["webrtc", "websocket"] : [transport];
    if (transport === "auto" && typeof RTCPeerConnection !== "function") {
      order = ["websocket"];
      this.fallback("webrtc", "websocket", "This browser has no WebRTC: the call runs over a WebSocket instead.");
    }
    const options = { baseUrl, model, key, headers, timings, timeoutMs };
    for (let i = 0; mine === this.generation; i++) {
      let conn;
      try {
        conn = await this.openSession(mine, order[i], options);
      } catch (err) {
        if (err.code !== "webrtc_unavailable" || i + 1 >= order.length || mine !== this.generation) throw err;
        this.fallback(order[i], order[i + 1], `${err.message} The call runs over a WebSocket instead.`);
        continue;
      }
      if (mine !== this.generation) {
        conn.close();
        break;
      }
      this.conn = conn;
      return conn;
    }
    return null;
  }

  fallback(from, to, message) {
    this.onNotice({ type: "rtkit.transport_fallback", from_transport: from, to_transport: to, message });
  }

  /** One transport; resolves once the server said `session.created`, rejects with a CallError. */
  async openSession(mine, kind, { baseUrl, model, key, headers, timings, timeoutMs }) {
    if (kind === "webrtc" && typeof RTCPeerConnection !== "function") {
      throw new CallError("webrtc_unavailable", "This browser has no WebRTC (RTCPeerConnection).", {
        hint: "use transport='auto' or 'websocket'",
      });
    }
    const current = () => mine === this.generation; // else the stragglers of an attempt given up on
    let started = false;
    let conn = null;
    let settle;
    const ready = new Promise((resolve, reject) => (settle = { resolve, reject }));
    const tooLate =
      kind === "webrtc"
        ? new CallError("webrtc_unavailable", `The WebRTC connection did not start within ${timeoutMs / 1000} s.`)
        : new CallError("network_lost", `The session did not start within ${timeoutMs / 1000} s.`);
    const timer = setTimeout(() => settle.reject(tooLate), timeoutMs);
    const on = {
      // The connection's first input frame: where the server's input stream (and its VAD's clock) begins.
      sending: (t, pc) => current() && this.recorder.sending(kind, this.meters.input && this.meters.input.source, t, pc),
      event: (event) => {
        if (event.type === "session.created" && !started) {
          started = true;
          clearTimeout(timer);
          settle.resolve();
        }
        if (current()) this.heard(event);
      },
      lost: (reason) => {
        if (started) return this.lost(conn, reason);
        clearTimeout(timer);
        settle.reject(
          kind === "webrtc"
            ? new CallError("webrtc_unavailable", `The WebRTC connection failed before the session started: ${reason}.`, {
                hint: "a firewall that blocks UDP does this",
              })
            : new CallError("upstream_unreachable", `The WebSocket failed before the session started: ${reason}.`, {
                // Browsers hide a refused WebSocket's HTTP status: every failed upgrade is code 1006.
                hint: "the key may have expired, or the Realtime API refused or could not be reached",
              }),
        );
      },
    };
    try {
      if (kind === "webrtc") {
        const onTrack = (stream) => current() && this.playStream(stream);
        conn = await openWebRTC({ baseUrl, key, mic: this.mic, onTrack, on, timings, headers });
      } else {
        conn = openWebSocket({
          baseUrl,
          model,
          key,
          on,
          capture: (onChunk) => {
            let first = true;
            if (current()) this.recorder.microphone(this.meters.input && this.meters.input.source); // before it sends
            const input = (this.meters.input && this.meters.input.source) || this.mic; // the recorder's node
            return captureMicrophone(this.context(), input, (audio, start) => {
              if (first) on.sending(start); // the input stream's first sample, on the recorder's clock
              first = false;
              onChunk(audio);
            });
          },
          onAudio: (base64, event) => current() && this.playPcm(base64, event),
        });
      }
      await ready;
    } catch (err) {
      clearTimeout(timer);
      if (conn) conn.close();
      throw err;
    }
    return conn;
  }

  lost(conn, reason) {
    if (conn !== this.conn) return; // already handled, or closed on purpose
    this.hangUp();
    this.onLost(reason);
  }

  /** Close the call (a new connection is a new session: its items are others); `release` frees the microphone. */
  hangUp({ release = false } = {}) {
    this.generation += 1; // an attempt under way closes what it opens
    const conn = this.conn;
    this.conn = null; // first, so that the transport's own close events are not taken for a lost line
    if (conn) conn.close();
    this.stopPlayback();
    if (this.recorder) this.recorder.pause();
    this.playout = new Playout();
    this.player.srcObject = null;
    this.unmeter("output");
    this.stats = this.rawStats = null;
    if (release) this.releaseMicrophone();
  }

  /** Hang up, free the microphone and the audio contexts: the page is done with calls. */
  close() {
    this.hangUp({ release: true });
    if (this.recorder) this.recorder.close();
    if (this.audio) this.audio.close();
    this.audio = this.pcmPlayer = this.recorder = null;
  }

  /** One client event on the open call; false when there is none. */
  send(event) {
    if (!this.conn) return false;
    this.conn.send(event);
    return true;
  }

  heard(event) {
    if (event.type === "response.created") this.setTranscript("");
    else if (event.type === "response.output_audio_transcript.delta") this.setTranscript(this.transcript + event.delta);
    else if (event.type === "response.output_audio_transcript.done") this.setTranscript(event.transcript);
    this.playout.event(event, this.clock());
    if (this.recorder) {
      this.recorder.event(event);
      const p = this.playout.playing;
      if (event.type === "output_audio_buffer.started" && p) this.recorder.replied(p.itemId, this.audio.currentTime);
    }
    this.onEvent(event);
    if (event.type === "input_audio_buffer.speech_started" && this.bargeIn) this.interrupt();
  }

  setTranscript(text) {
    this.transcript = text;
    this.onTranscript(text);
  }

  /** WebRTC playback's clock: the AudioContext's while it runs (the <audio> element plays regardless). */
  clock() {
    return this.audio && this.audio.state === "running" ? this.audio.currentTime : performance.now() / 1000;
  }

  /**
   * The user spoke over the reply: silence it at once and tell the API what was heard, as the official clients
   * do: `output_audio_buffer.clear` over WebRTC, `response.cancel` where the session's interrupt_response is
   * false (else the server cancels by itself), and `conversation.item.truncate` to what was played. Never a
   * truncate that earns an error: not for an item nothing of which was heard, nor one outside the conversation.
   * Returns (and hands onBargeIn) what was cut, or null when nothing was playing.
   */
  interrupt() {
    const conn = this.conn;
    if (!conn) return null;
    let now;
    if (conn.name === "webrtc") {
      // What left the server at `started` reaches the ear after the jitter buffer's delay.
      now = this.clock() - ((this.stats && this.stats.jitter_buffer_ms) || 0) / 1000;
    } else {
      if (!this.audio) return null;
      now = this.audio.currentTime - (this.audio.outputLatency || 0);
    }
    const cut = this.playout.interrupt(now);
    if (!cut) return null;
    this.stopPlayback();
    if (conn.name !== "webrtc" && this.recorder) this.recorder.cut(this.audio.currentTime); // stopped there
    if (conn.name === "webrtc") conn.send({ type: "output_audio_buffer.clear" });
    let cancelled = false;
    let truncated = false;
    if (!this.playout.interruptResponse && this.playout.activeResponse) {
      conn.send({ type: "response.cancel", response_id: this.playout.activeResponse });
      cancelled = true;
    }
    if (cut.truncatable && cut.playedMs > 0) {
      const { itemId, contentIndex, playedMs } = cut;
      conn.send({ type: "conversation.item.truncate", item_id: itemId, content_index: contentIndex, audio_end_ms: playedMs });
      truncated = true;
    }
    const record = {
      item_id: cut.itemId,
      response_id: cut.responseId,
      content_index: cut.contentIndex,
      played_ms: cut.playedMs,
      produced_ms: cut.receivedMs,
      truncated,
      cancelled,
      transport: conn.name,
    };
    this.onBargeIn(record);
    return record;
  }

  // ---- microphone, meters, playback ------------------------------------------------------------------

  /** The AudioContext behind the meters, resumed: allowed once the page has had a click (Shift+Enter counts). */
  context() {
    this.audio = this.audio || new AudioContext();
    this.audio.resume();
    return this.audio;
  }

  /** On a click (the user gesture browsers ask for before they play sound): resolves once the audio runs. */
  resumeAudio() {
    if (this.player.srcObject) this.player.play().catch(() => {});
    return this.context().resume();
  }

  async openMicrophone() {
    this.context();
    if (this.mic) return;
    this.mic = await openMicrophone(this.retry);
    this.mute(this.muted);
    this.meter(this.audio.createMediaStreamSource(this.mic), "input");
    this.recorder = this.recorder || new Recorder(this.audio);
  }

  /** Stops the tracks, which turns the browser's recording light off. */
  releaseMicrophone() {
    if (this.mic) this.mic.getTracks().forEach((track) => track.stop());
    this.mic = null;
    this.unmeter("input");
  }

  /** Muted, the track stays in the call and sends silence: nothing to renegotiate, and the VAD hears a pause. */
  mute(muted) {
    this.muted = muted;
    if (this.mic) this.mic.getAudioTracks().forEach((track) => (track.enabled = !muted));
  }

  meter(source, direction) {
    this.unmeter(direction);
    const analyser = source.context.createAnalyser();
    analyser.fftSize = 2048;
    source.connect(analyser);
    this.meters[direction] = { source, analyser, samples: new Float32Array(analyser.fftSize) };
  }

  unmeter(direction) {
    const m = this.meters[direction];
    if (m) m.source.disconnect(m.analyser); // only that edge: the WebSocket's speaker node feeds the output too
    delete this.meters[direction];
  }

  /** Each metered direction's last 2048 samples (43 ms at 48 kHz): [{direction, rms, peak}], linear 0..1. */
  measure() {
    const readings = [];
    for (const direction of ["input", "output"]) {
      const m = this.meters[direction];
      if (!m) continue;
      m.analyser.getFloatTimeDomainData(m.samples);
      let sum = 0;
      let peak = 0;
      for (const x of m.samples) {
        sum += x * x;
        peak = Math.max(peak, Math.abs(x));
      }
      readings.push({ direction, rms: Math.sqrt(sum / m.samples.length), peak });
    }
    return readings;
  }

  /** WebRTC: the browser decodes the model's voice; the <audio> element plays it. */
  playStream(stream) {
    this.player.srcObject = stream;
    this.player.play().catch((err) => {
      if (err.name !== "NotAllowedError") return; // AbortError: hung up before it started
      this.onNotice({
        type: "rtkit.playback_blocked",
        message: "The browser holds the reply's sound until you click on the page: click the widget to hear it.",
      });
    });
    const source = this.context().createMediaStreamSource(stream);
    this.meter(source, "output");
    this.recorder.play(source); // what the <audio> element plays, on the page's clock
  }

  // WebSocket: the model's voice arrives as base64 PCM16 chunks (24 kHz buffers), queued back to back on the
  // page's context, whose clock the playout and the recorder keep.
  playPcm(base64, event) {
    if (this.playout.silenced.has(event.item_id)) return; // the rest of a reply the user interrupted
    this.pcmPlayer = this.pcmPlayer || new PcmPlayer(this.context());
    if (!this.meters.output) this.meter(this.pcmPlayer.output, "output");
    if (this.recorder) this.recorder.play(this.pcmPlayer.output);
    const { start, end } = this.pcmPlayer.play(base64);
    this.playout.scheduled(event, start, end);
    if (this.recorder) this.recorder.replied(event.item_id, start, end);
  }

  /** Both sides of the page's calls so far (see Recorder.handOver); null before the microphone was opened. */
  recording() {
    return this.recorder ? this.recorder.handOver() : Promise.resolve(null);
  }

  stopPlayback() {
    if (this.pcmPlayer) this.pcmPlayer.stop();
  }

  // ---- getStats: what the WebRTC connection itself measures ------------------------------------------

  /** One reading (rtt_ms, jitter_ms, jitter_buffer_ms, packets, audio levels), kept as `stats`; null if no WebRTC. */
  async readStats() {
    const pc = this.conn && this.conn.pc;
    if (!pc) return null;
    const stats = {};
    const previous = this.rawStats || {};
    const raw = {};
    (await pc.getStats()).forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" && s.currentRoundTripTime != null) {
        stats.rtt_ms = s.currentRoundTripTime * 1000;
      } else if (s.type === "inbound-rtp" && s.kind === "audio") {
        stats.jitter_ms = s.jitter * 1000;
        stats.packets_received = s.packetsReceived;
        stats.packets_lost = s.packetsLost;
        stats.audio_level = s.audioLevel;
        raw.delay = s.jitterBufferDelay;
        raw.emitted = s.jitterBufferEmittedCount;
        // What the jitter buffer did to the model's voice since the call began, in ms of audio: samples it
        // added to wait for late packets (stretching, concealment) and removed to catch up (acceleration).
        const rate = s.totalSamplesDuration > 0 ? s.totalSamplesReceived / s.totalSamplesDuration : 48000;
        const ms = (samples) => (samples == null ? undefined : (1000 * samples) / rate);
        stats.inserted_ms = ms(s.insertedSamplesForDeceleration);
        stats.removed_ms = ms(s.removedSamplesForAcceleration);
        stats.concealed_ms = ms(s.concealedSamples);
      } else if (s.type === "outbound-rtp" && s.kind === "audio") {
        stats.packets_sent = s.packetsSent;
      } else if (s.type === "media-source" && s.kind === "audio") {
        stats.input_audio_level = s.audioLevel;
      }
    });
    if (pc !== (this.conn && this.conn.pc)) return null; // hung up while getStats ran
    // jitterBufferDelay is a running total of seconds over every emitted sample: the mean over the last
    // second is the difference of two readings.
    const emitted = (raw.emitted || 0) - (previous.emitted || 0);
    if (emitted > 0) stats.jitter_buffer_ms = (1000 * (raw.delay - (previous.delay || 0))) / emitted;
    this.rawStats = raw;
    this.stats = stats;
    return stats;
  }
}

// ---- what was played, for barge-in -----------------------------------------------------------------

/**
 * The page's half of a barge-in: which reply item is playing and how much of it the user has heard, in
 * seconds on the playback's clock. What arrived is not what was heard: a WebSocket reply arrives faster than
 * it plays, and the API cuts its transcript where the client says (`conversation.item.truncate`).
 * Over WebRTC a response's audio item plays from `output_audio_buffer.started` to `stopped`/`cleared`; over the
 * WebSocket each delta names its item and is scheduled on the page's context.
 */
class Playout {
  constructor() {
    this.interruptResponse = true;
    this.activeResponse = null;
    this.assistantItems = new Set();
    this.audioParts = new Map(); // response id -> [item id, content index]
    this.playing = null; //        {itemId, contentIndex, responseId, started?, segments: [[start, end]], done}
    this.silenced = new Set(); //  items whose late deltas are dropped (WebSocket)
  }

  event(event, now) {
    const t = event.type;
    if (t === "session.created" || t === "session.updated") {
      const detection = ((event.session.audio || {}).input || {}).turn_detection;
      this.interruptResponse = !detection || detection.interrupt_response !== false;
    } else if ((t === "conversation.item.added" || t === "conversation.item.created") && event.item.role === "assistant") {
      this.assistantItems.add(event.item.id);
    } else if (t === "response.created") {
      this.activeResponse = event.response.id;
    } else if (t === "response.done") {
      if (this.activeResponse === event.response.id) this.activeResponse = null;
      if (this.playing && this.playing.responseId === event.response.id) this.playing.done = true;
    } else if (t === "response.content_part.added" && ["audio", "output_audio"].includes(event.part.type)) {
      this.audioParts.set(event.response_id, [event.item_id, event.content_index || 0]);
    } else if (t === "response.output_audio.done") {
      if (this.playing && this.playing.itemId === event.item_id) this.playing.done = true;
    } else if (t === "output_audio_buffer.started") {
      const part = this.audioParts.get(event.response_id);
      this.playing = part && { itemId: part[0], contentIndex: part[1], responseId: event.response_id, started: now };
    } else if (t === "output_audio_buffer.stopped" || t === "output_audio_buffer.cleared") {
      if (this.playing && this.playing.responseId === event.response_id) this.playing = null;
    }
  }

  /** WebSocket: a chunk of the delta's item will play from `start` to `end`. */
  scheduled(event, start, end) {
    if (!this.playing || this.playing.itemId !== event.item_id) {
      const { item_id: itemId, content_index: contentIndex, response_id: responseId } = event;
      this.playing = { itemId, contentIndex: contentIndex || 0, responseId, segments: [], done: false };
    }
    this.playing.segments.push([start, end]);
  }

  /** How much of the playing item was heard by `now`, or null when nothing is playing; the rest is dropped. */
  interrupt(now) {
    const p = this.playing;
    if (!p) return null;
    let played;
    let receivedMs = null;
    if (p.segments) {
      played = p.segments.reduce((sum, [s, e]) => sum + Math.min(Math.max(now - s, 0), e - s), 0);
      const received = p.segments.reduce((sum, [s, e]) => sum + (e - s), 0);
      receivedMs = Math.floor(received * 1000 + 1e-6);
      if (p.done && played >= received) return (this.playing = null); // heard in full: nothing to interrupt
      this.silenced.add(p.itemId);
    } else {
      played = Math.max(0, now - p.started);
    }
    this.playing = null;
    let playedMs = Math.floor(played * 1000);
    if (receivedMs !== null) playedMs = Math.min(playedMs, receivedMs); // never more than was produced
    return {
      itemId: p.itemId,
      contentIndex: p.contentIndex,
      responseId: p.responseId,
      playedMs,
      receivedMs,
      truncatable: this.assistantItems.has(p.itemId),
    };
  }
}
