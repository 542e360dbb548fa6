/*
 * The guide's browser client, the part every rtkit page shares: the broker's demo page (`GET /` on the
 * broker, which serves this file at /static/realtime.js) and the notebook's BrowserCall widget (whose
 * module is this file followed by static/browser_call.js: anywidget loads one module, with no imports).
 *
 *   openMicrophone()    getUserMedia with echo cancellation; refusals as CallError in plain words
 *   openWebRTC()        microphone track + "oai-events" data channel; the SDP offer POSTed to
 *                       `${baseUrl}/realtime/calls` with the ek_ key, the answer applied
 *   openWebSocket()     the same call over a WebSocket: the key rides in a subprotocol, audio is base64 PCM16
 *   PcmPlayer, captureMicrophone()   that transport's audio, at 24 kHz
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
    if (state === "connected") timings.connected_ms = timings.connected_ms || since();
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

// The microphone goes up as base64 PCM16 in 100 ms chunks, cut on the audio thread.
const CAPTURE_WORKLET = `
registerProcessor("pcm16-chunks", class extends AudioWorkletProcessor {
  constructor() { super(); this.chunk = new Int16Array(${PCM_RATE / 10}); this.n = 0; }
  process([input]) {
    for (const x of input[0] || []) {
      this.chunk[this.n++] = Math.max(-1, Math.min(1, x)) * 32767;
      if (this.n === this.chunk.length) { this.port.postMessage(this.chunk.slice()); this.n = 0; }
    }
    return true;
  }
});`;
const workletModules = new WeakMap(); // AudioContext -> the promise of its loaded worklet

/** Send `mic` as chunks through `context` (a 24 kHz context resamples for us); resolves to a stop function. */
export async function captureMicrophone(context, mic, onChunk) {
  if (!workletModules.has(context)) {
    const url = URL.createObjectURL(new Blob([CAPTURE_WORKLET], { type: "text/javascript" }));
    workletModules.set(context, context.audioWorklet.addModule(url));
  }
  await workletModules.get(context);
  const source = context.createMediaStreamSource(mic);
  // No outputs: Chromium runs such a node without connecting it to the speakers.
  const node = new AudioWorkletNode(context, "pcm16-chunks", { numberOfOutputs: 0 });
  node.port.onmessage = ({ data }) => {
    let binary = "";
    for (const byte of new Uint8Array(data.buffer)) binary += String.fromCharCode(byte);
    onChunk(btoa(binary));
  };
  source.connect(node);
  return () => source.disconnect();
}
