/*
 * rtkit voice demo: one voice call to the Realtime API, with a key from the rtkit broker.
 *
 *   1. POST /api/client-secret on this broker      -> a short-lived "ek_" key (the main key stays there)
 *   2. WebRTC: microphone track + "oai-events" data channel; the SDP offer goes to
 *      `${realtimeUrl}/realtime/calls` with the ek_ key, the SDP answer comes back
 *   3. the model's voice arrives on an audio track, its events as JSON on the data channel
 *
 * Without WebRTC the same call runs over a WebSocket. Plain ES2020 modules, no build step: the microphone,
 * the transports and the PCM audio come from /static/realtime.js, which the notebook's BrowserCall shares.
 * Query flags, for experiments and tests:
 *   ?transport=websocket   use the WebSocket transport even where WebRTC exists
 *   ?retries=N             how many times to reconnect after a lost connection (default 5)
 *   ?silenceMs=200         end a turn after 200 ms of silence and let replies finish: Chromium's fake
 *                          microphone beeps every 500 ms, and its gaps never reach the default 500 ms
 */

import {
  CallError,
  PCM_RATE,
  PcmPlayer,
  captureMicrophone,
  openMicrophone as askForMicrophone,
  openWebRTC,
  openWebSocket,
} from "./realtime.js";

const params = new URLSearchParams(location.search);
const MAX_RECONNECTS = Number(params.get("retries") ?? 5);
const SILENCE_MS = params.has("silenceMs") ? Number(params.get("silenceMs")) : null;
const BARGE_IN = SILENCE_MS === null; // speaking over a reply stops it, unless ?silenceMs asked replies to finish
const FIRST_RETRY_MS = 500; // doubled per attempt up to MAX_RETRY_MS, each scaled by a random 0.8..1.2
const MAX_RETRY_MS = 8000;
const OPEN_TIMEOUT_MS = 15000;

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
    throw new CallError("broker_unreachable", "The broker cannot be reached. Is it still running?");
  }
  // The broker's errors read {error, message, code, requestId, retryAfter (ms)}: show its message as is.
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const message = body.message || `The broker answered HTTP ${res.status}.`;
    throw new CallError("broker_error", message, { retryAfter: body.retryAfter == null ? null : body.retryAfter / 1000 });
  }
  demo.keysMinted += 1;
  log(`key for ${sessionId} from the broker, expires ${body.expiresAt}`);
  return body.ephemeralKey;
}

// ---- microphone, meters, playback ------------------------------------------------------------------

async function openMicrophone() {
  if (mic) return;
  mic = await askForMicrophone("then press Connect again");
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
let player = null;

function playPcm16(base64) {
  if (!player) {
    player = new PcmPlayer(audio);
    meter(player.output, "output");
  }
  player.play(base64);
}

function stopPlayback() {
  if (player) player.stop();
}

// ---- transports (realtime.js): each calls on.event(serverEvent) and on.lost(reason) ----------------

function openTransportOf(kind, key, on) {
  if (kind === "webrtc") {
    return openWebRTC({ baseUrl: config.realtimeUrl, key, mic, onTrack: playRemoteStream, on });
  }
  return openWebSocket({
    baseUrl: config.realtimeUrl,
    model: config.model,
    key,
    on,
    capture: (onChunk) => captureMicrophone(audio, mic, onChunk),
    onAudio: playPcm16,
  });
}

// ---- a session: key, transport, events -------------------------------------------------------------

/** Open one transport with `key`; resolves once the server said `session.created`. */
async function openTransport(key) {
  let started = false;
  let conn = null;
  let settle;
  const ready = new Promise((resolve, reject) => (settle = { resolve, reject }));
  const timer = setTimeout(
    () => settle.reject(new CallError("network_lost", `The session did not start within ${OPEN_TIMEOUT_MS / 1000} s.`)),
    OPEN_TIMEOUT_MS,
  );
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
      settle.reject(new CallError("network_lost", `The connection failed before the session started: ${reason}.`));
    },
  };
  try {
    conn = await openTransportOf(transportName, key, on);
    log(`${conn.name}: call opened, waiting for session.created`);
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
  if (event.type === "input_audio_buffer.speech_started" && BARGE_IN) stopPlayback();
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
  const wait = err.retryAfter ? ` (retry after ${Math.ceil(err.retryAfter)} s)` : "";
  const text = err.message + wait + (err.hint ? ` — ${err.hint}` : "");
  showMessage(text);
  log(text, "error");
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
      retryAfterMs = (Number(err.retryAfter) || 0) * 1000;
      log(`attempt ${attempt} failed: ${err.message}`, "error");
      setState("disconnected");
    }
  }
  const advice = "Check the network, then press Connect.";
  fail(new CallError("network_lost", `Unable to reconnect after ${MAX_RECONNECTS} attempts. ${advice}`));
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
