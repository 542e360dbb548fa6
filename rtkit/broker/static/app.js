"use strict";
/*
 * rtkit voice demo: one voice call to the Realtime API, with a key from the rtkit broker.
 *
 *   1. POST /api/client-secret on this broker      -> a short-lived "ek_" key (the main key stays there)
 *   2. WebRTC: microphone track + "oai-events" data channel; the SDP offer goes to
 *      `${realtimeUrl}/realtime/calls` with the ek_ key, the SDP answer comes back
 *   3. the model's voice arrives on an audio track, its events as JSON on the data channel
 *
 * Without WebRTC the same call runs over a WebSocket. Plain ES2020, no build step.
 * Query flags, for experiments and tests:
 *   ?transport=websocket   use the WebSocket transport even where WebRTC exists
 *   ?retries=N             how many times to reconnect after a lost connection (default 5)
 *   ?silenceMs=200         end a turn after 200 ms of silence and let replies finish: Chromium's fake
 *                          microphone beeps every 500 ms, and its gaps never reach the default 500 ms
 */

const params = new URLSearchParams(location.search);
const MAX_RECONNECTS = Number(params.get("retries") ?? 5);
const SILENCE_MS = params.has("silenceMs") ? Number(params.get("silenceMs")) : null;
const BARGE_IN = SILENCE_MS === null; // speaking over a reply stops it, unless ?silenceMs asked replies to finish
const FIRST_RETRY_MS = 500; // doubled per attempt up to MAX_RETRY_MS, each scaled by a random 0.8..1.2
const MAX_RETRY_MS = 8000;
const DISCONNECTED_GRACE_MS = 5000; // "disconnected" often heals by itself; the official client waits 5 s too
const OPEN_TIMEOUT_MS = 15000;
const PCM_RATE = 24000; // the Realtime API's PCM rate (WebSocket transport)

const $ = (id) => document.getElementById(id);
const T0 = performance.now();

/** What the page knows, for DevTools and the tests: `rtkitDemo.state`, `.states`, `.events`, `.levels`... */
const demo = (window.rtkitDemo = {
  ready: false, state: "disconnected", states: ["disconnected"], transport: null,
  events: [], keysMinted: 0, transcript: "",
  levels: { input: 0, output: 0, inputPeak: 0, outputPeak: 0 },
  send: (event) => connection && connection.send(event),
});

let config = null; //     {realtimeUrl, model} from /config.json
let wanted = false; //    the user pressed Connect and not Disconnect: a lost connection is re-established
let run = 0; //           bumped by Connect and Disconnect, so that a stale reconnection loop stops
let mic = null; //        the microphone's MediaStream, kept across reconnections
let audio = null; //      the AudioContext behind the meters (and the WebSocket transport's audio)
let connection = null; // the open transport: {name, send(event), close()}
let keyCount = 0;
const tabId = sessionStorage.getItem("rtkit-tab") || Math.random().toString(36).slice(2, 10);
sessionStorage.setItem("rtkit-tab", tabId);
const transportName = params.get("transport") || (window.RTCPeerConnection ? "webrtc" : "websocket");

/** A failure the page can explain: `message` is for people, `retryAfterMs` says when trying again makes sense. */
class ConnectError extends Error {
  constructor(message, { retryAfterMs = null, keyRefused = false } = {}) {
    super(message);
    this.retryAfterMs = retryAfterMs;
    this.keyRefused = keyRefused;
  }
}

// ---- the page --------------------------------------------------------------------------------------

function log(text, kind = "") {
  const li = document.createElement("li");
  li.textContent = `${((performance.now() - T0) / 1000).toFixed(3)}  ${text}`;
  li.className = kind;
  const list = $("log");
  list.append(li);
  if (list.children.length > 300) list.firstChild.remove();
  list.scrollTop = list.scrollHeight;
}

function setState(state) {
  $("connect").disabled = wanted || !demo.ready;
  $("disconnect").disabled = !wanted;
  if (state === demo.state) return;
  demo.state = state;
  demo.states.push(state);
  $("state").textContent = state;
  $("state").dataset.state = state;
  log(`state: ${state}`, "info");
}

function showMessage(text, kind = "error") {
  $("message").textContent = text;
  $("message").className = kind;
  $("message").hidden = false;
}

function clearMessage() {
  $("message").hidden = true;
}

function setTranscript(text) {
  demo.transcript = text;
  $("transcript").textContent = text || "…";
  $("transcript").classList.remove("muted");
}

// ---- the broker: ephemeral keys --------------------------------------------------------------------

async function mintKey() {
  // The broker caches one key per sessionId (a page reload reuses it); a new id asks for a fresh key.
  keyCount += 1;
  const sessionId = `${tabId}-${keyCount}`;
  let res;
  try {
    res = await fetch("/api/client-secret", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sessionId, capabilities: ["audio", transportName] }),
    });
  } catch {
    throw new ConnectError("The broker cannot be reached. Is it still running?");
  }
  // The broker's errors read {error, message, code, requestId, retryAfter (ms)}: show its message as is.
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const message = body.message || `The broker answered HTTP ${res.status}.`;
    throw new ConnectError(message, { retryAfterMs: body.retryAfter ?? null });
  }
  demo.keysMinted += 1;
  log(`key for ${sessionId} from the broker, expires ${body.expiresAt}`);
  return body.ephemeralKey;
}

// ---- microphone, meters, playback ------------------------------------------------------------------

async function openMicrophone() {
  if (mic) return;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new ConnectError("This page cannot use a microphone here: open it over https or on localhost.");
  }
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
  } catch (err) {
    if (err.name === "NotAllowedError") {
      throw new ConnectError(
        "Microphone access is blocked. Click the microphone (or lock) icon in the address bar, " +
          "allow the microphone for this site, then press Connect again.",
      );
    }
    if (err.name === "NotFoundError") {
      throw new ConnectError(
        "No microphone was found. Plug one in (or enable it in the system's sound settings), " +
          "then press Connect again.",
      );
    }
    throw new ConnectError(`The microphone could not be opened: ${err.message}`);
  }
  meter(audio.createMediaStreamSource(mic), "input");
}

function releaseMicrophone() {
  if (mic) mic.getTracks().forEach((track) => track.stop());
  mic = null;
}

// A meter shows the loudest of the last 2048 samples (43 ms at 48 kHz), read ten times a second.
const meters = {};
function meter(source, which) {
  if (meters[which]) meters[which].source.disconnect();
  const analyser = audio.createAnalyser();
  analyser.fftSize = 2048;
  source.connect(analyser);
  meters[which] = { source, analyser, samples: new Float32Array(analyser.fftSize) };
}

setInterval(() => {
  for (const which of ["input", "output"]) {
    const m = meters[which];
    let peak = 0;
    if (m) {
      m.analyser.getFloatTimeDomainData(m.samples);
      for (const x of m.samples) peak = Math.max(peak, Math.abs(x));
    }
    demo.levels[which] = peak;
    demo.levels[`${which}Peak`] = Math.max(demo.levels[`${which}Peak`], peak);
    $(`${which}-level`).value = peak;
  }
}, 100);

/** WebRTC: the browser decodes the model's voice; an <audio> element plays it (Chromium's Web Audio
 *  also reads a remote stream only while a media element plays it). */
function playRemoteStream(stream) {
  $("remote-audio").srcObject = stream;
  meter(audio.createMediaStreamSource(stream), "output");
}

// WebSocket: the model's voice arrives as base64 PCM16 chunks, queued back to back on the AudioContext.
let speaker = null;
let playhead = 0;
const playing = new Set();

function playPcm16(base64) {
  if (!speaker) {
    speaker = audio.createGain();
    speaker.connect(audio.destination);
    meter(speaker, "output");
  }
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const pcm = new Int16Array(bytes.buffer);
  const buffer = audio.createBuffer(1, pcm.length, PCM_RATE);
  buffer.getChannelData(0).set(Float32Array.from(pcm, (x) => x / 32768));
  const node = audio.createBufferSource();
  node.buffer = buffer;
  node.connect(speaker);
  playhead = Math.max(playhead, audio.currentTime);
  node.start(playhead);
  playhead += buffer.duration;
  playing.add(node);
  node.onended = () => playing.delete(node);
}

function stopPlayback() {
  playing.forEach((node) => node.stop());
  playing.clear();
  playhead = 0;
}

// WebSocket: the microphone is sent as base64 PCM16 in 100 ms chunks, cut on the audio thread.
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
let captureModule = null;

async function captureMicrophone(onChunk) {
  const url = URL.createObjectURL(new Blob([CAPTURE_WORKLET], { type: "text/javascript" }));
  captureModule = captureModule || audio.audioWorklet.addModule(url);
  await captureModule;
  const source = audio.createMediaStreamSource(mic);
  // No outputs: Chromium runs such a node without connecting it to the speakers.
  const node = new AudioWorkletNode(audio, "pcm16-chunks", { numberOfOutputs: 0 });
  node.port.onmessage = ({ data }) => {
    let binary = "";
    for (const byte of new Uint8Array(data.buffer)) binary += String.fromCharCode(byte);
    onChunk(btoa(binary));
  };
  source.connect(node);
  return () => source.disconnect();
}

// ---- transports: each calls on.event(serverEvent) and on.lost(reason), returns {name, send, close} ---

async function openWebRTC(key, on) {
  // No iceServers: the service's answer carries its own candidates and learns the browser's address from
  // its connectivity checks (the OpenAI docs use a bare RTCPeerConnection too; on loopback STUN only slows).
  const pc = new RTCPeerConnection();
  pc.addTrack(mic.getAudioTracks()[0], mic);
  pc.ontrack = (e) => playRemoteStream(e.streams[0]);
  const dc = pc.createDataChannel("oai-events");
  dc.onmessage = (e) => on.event(JSON.parse(e.data));
  dc.onclose = () => on.lost("the data channel closed");
  let grace = null;
  pc.onconnectionstatechange = () => {
    clearTimeout(grace);
    const state = pc.connectionState;
    if (state === "failed" || state === "closed") on.lost(`the peer connection ${state}`);
    if (state === "disconnected") {
      grace = setTimeout(() => on.lost(`the peer connection stayed disconnected for ${DISCONNECTED_GRACE_MS} ms`),
        DISCONNECTED_GRACE_MS);
    }
  };

  try {
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(`${config.realtimeUrl}/realtime/calls`, {
      method: "POST",
      body: pc.localDescription.sdp,
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/sdp" },
    }).catch(() => {
      throw new ConnectError(`The Realtime API at ${config.realtimeUrl} cannot be reached.`);
    });
    const body = await res.text();
    if (!res.ok) throw refusedCall(res.status, body);
    log(`POST /realtime/calls -> ${res.status}`);
    await pc.setRemoteDescription({ type: "answer", sdp: body });
  } catch (err) {
    dc.onclose = pc.onconnectionstatechange = null; // a call that never opened is not a lost one
    pc.close();
    throw err;
  }
  return { name: "webrtc", send: (event) => dc.send(JSON.stringify(event)), close: () => pc.close() };
}

/** An error body is JSON, never SDP: read it as such, or the user sees "Failed to parse SessionDescription". */
function refusedCall(status, body) {
  let message = body;
  try {
    message = JSON.parse(body).error.message;
  } catch {
    // not the API's JSON error: show the body as it came
  }
  return new ConnectError(`The Realtime API refused the call (HTTP ${status}): ${message}`, {
    keyRefused: status === 401,
  });
}

function openWebSocket(key, on) {
  // Browsers cannot set headers on a WebSocket: the key rides in a subprotocol, next to "realtime".
  const url = `${config.realtimeUrl.replace(/^http/, "ws")}/realtime?model=${encodeURIComponent(config.model)}`;
  const ws = new WebSocket(url, ["realtime", `openai-insecure-api-key.${key}`]);
  const send = (event) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(event));
  let stopCapture = () => {};
  ws.onopen = async () => {
    stopCapture = await captureMicrophone((audio) => send({ type: "input_audio_buffer.append", audio }));
    if (ws.readyState !== WebSocket.OPEN) stopCapture(); // closed while the worklet loaded
  };
  ws.onmessage = (e) => {
    const event = JSON.parse(e.data);
    if (event.type === "response.output_audio.delta") playPcm16(event.delta);
    if (event.type === "input_audio_buffer.speech_started" && BARGE_IN) stopPlayback();
    on.event(event);
  };
  // A refused key looks like any other failed upgrade here (code 1006): browsers hide the HTTP status.
  ws.onclose = (e) => {
    stopCapture();
    on.lost(`the WebSocket closed (code ${e.code})`);
  };
  return { name: "websocket", send, close: () => ws.close() };
}

// ---- a session: key, transport, events -------------------------------------------------------------

/** Open one transport with `key`; resolves once the server said `session.created`. */
async function openTransport(key) {
  let started = false;
  let conn = null;
  let settle;
  const ready = new Promise((resolve, reject) => (settle = { resolve, reject }));
  const timer = setTimeout(() => settle.reject(new ConnectError("The session did not start within 15 s.")),
    OPEN_TIMEOUT_MS);
  const on = {
    event(event) {
      onServerEvent(event);
      if (event.type === "session.created" && !started) {
        started = true;
        clearTimeout(timer);
        settle.resolve();
      }
    },
    lost(reason) {
      if (started) return onLost(conn, reason);
      clearTimeout(timer);
      settle.reject(new ConnectError(`The connection failed before the session started: ${reason}.`));
    },
  };
  try {
    conn = transportName === "webrtc" ? await openWebRTC(key, on) : openWebSocket(key, on);
    await ready;
  } catch (err) {
    clearTimeout(timer);
    if (conn) conn.close();
    throw err;
  }
  if (SILENCE_MS !== null) {
    const turn_detection = { type: "server_vad", silence_duration_ms: SILENCE_MS, interrupt_response: false };
    conn.send({ type: "session.update", session: { type: "realtime", audio: { input: { turn_detection } } } });
  }
  return conn;
}

/** A key, then a transport; a key refused by the Realtime API (expired on the way) earns one fresh key. */
async function openCall() {
  try {
    return await openTransport(await mintKey());
  } catch (err) {
    if (!err.keyRefused) throw err;
    log(`${err.message} Asking the broker for a fresh key.`, "warn");
    return await openTransport(await mintKey());
  }
}

function onServerEvent(event) {
  const record = { t: Math.round(performance.now() - T0), type: event.type };
  if (event.response) record.status = event.response.status;
  demo.events.push(record);
  if (event.type === "response.created") setTranscript("");
  if (event.type === "response.output_audio_transcript.delta") setTranscript(demo.transcript + event.delta);
  if (event.type === "response.output_audio_transcript.done") setTranscript(event.transcript);
  // Deltas come dozens a second: the transcript and the meter show them, the log does not.
  if (event.type.endsWith(".delta")) return;
  if (event.type === "error") log(`error ${event.error.code}: ${event.error.message}`, "error");
  else log(event.type + (record.status ? ` (${record.status})` : ""));
}

// ---- connect, disconnect, reconnect ----------------------------------------------------------------

async function connect() {
  const mine = ++run;
  wanted = true;
  clearMessage();
  setState("connecting");
  // The WebSocket carries 24 kHz PCM: a 24 kHz context lets the browser resample the microphone for us.
  // (Firefox refuses to mix rates that way, but it always has WebRTC, which leaves rates to the browser.)
  audio = audio || new AudioContext(transportName === "websocket" ? { sampleRate: PCM_RATE } : {});
  await audio.resume(); // allowed now: the click on Connect is the user gesture browsers ask for
  try {
    await openMicrophone();
    const conn = await openCall();
    if (mine !== run) return conn.close(); // Disconnect was pressed meanwhile
    connection = conn;
    setState("connected");
  } catch (err) {
    if (mine !== run) return;
    fail(err);
  }
}

function disconnect() {
  run += 1;
  wanted = false;
  hangUp();
  releaseMicrophone();
  clearMessage();
  setState("disconnected");
}

function hangUp() {
  const conn = connection;
  connection = null; // first, so that the transport's own close events are not taken for a lost line
  if (conn) conn.close();
  stopPlayback();
}

function fail(err) {
  wanted = false;
  hangUp();
  releaseMicrophone();
  const wait = err.retryAfterMs ? ` (retry after ${Math.ceil(err.retryAfterMs / 1000)} s)` : "";
  showMessage(err.message + wait);
  log(err.message + wait, "error");
  setState("failed");
}

function backoff(attempt) {
  const base = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** (attempt - 1));
  // Jitter: a classroom that lost the network together should not come back in lockstep.
  return Math.round(base * (0.8 + 0.4 * Math.random()));
}

async function onLost(conn, reason) {
  if (conn !== connection) return; // already handled, or closed on purpose
  const mine = run;
  hangUp();
  log(`connection lost: ${reason}`, "warn");
  setState("disconnected");
  let retryAfterMs = 0;
  for (let attempt = 1; attempt <= MAX_RECONNECTS; attempt++) {
    const wait = Math.max(backoff(attempt), retryAfterMs); // the broker may know better when to come back
    showMessage(`Connection lost. Reconnecting (attempt ${attempt} of ${MAX_RECONNECTS})…`, "info");
    log(`reconnecting in ${wait} ms (attempt ${attempt} of ${MAX_RECONNECTS})`, "warn");
    await new Promise((resolve) => setTimeout(resolve, wait));
    if (mine !== run) return;
    setState("connecting");
    try {
      const fresh = await openCall(); // always a fresh key: the old one may be what failed
      if (mine !== run) return fresh.close();
      connection = fresh;
      clearMessage();
      setState("connected");
      return;
    } catch (err) {
      if (mine !== run) return;
      retryAfterMs = err.retryAfterMs || 0;
      log(`attempt ${attempt} failed: ${err.message}`, "error");
      setState("disconnected");
    }
  }
  const advice = "Check the network, then press Connect.";
  fail(new ConnectError(`Unable to reconnect after ${MAX_RECONNECTS} attempts. ${advice}`));
}

// ---- start -----------------------------------------------------------------------------------------

async function init() {
  $("connect").disabled = true;
  $("connect").onclick = connect;
  $("disconnect").onclick = disconnect;
  $("transport").textContent = `transport: ${transportName}`;
  demo.transport = transportName;
  if (!window.RTCPeerConnection) log("this browser has no WebRTC (RTCPeerConnection): using a WebSocket", "warn");
  try {
    const res = await fetch("/config.json");
    config = await res.json();
  } catch {
    showMessage("The broker did not answer /config.json. Is it running?");
    return;
  }
  log(`Realtime API at ${config.realtimeUrl}, model ${config.model}`);
  demo.ready = true;
  $("connect").disabled = false;
}

init();
