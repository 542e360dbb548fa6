/*
 * rtkit voice demo: one voice call to the Realtime API, with a key from the rtkit broker.
 *
 *   1. POST /api/client-secret on this broker      -> a short-lived "ek_" key (the main key stays there)
 *   2. WebRTC: microphone track + "oai-events" data channel; the SDP offer goes to
 *      `${realtimeUrl}/realtime/calls` with the ek_ key, the SDP answer comes back
 *   3. the model's voice arrives on an audio track, its events as JSON on the data channel
 *
 * Without WebRTC the same call runs over a WebSocket. Plain ES2020 modules, no build step. The call itself (the
 * microphone, the session over either transport, meters, playback, barge-in) is PageCall, from
 * /static/realtime.js, which the notebook's BrowserCall shares; this page adds its UI, the broker's keys and
 * its reconnection policy (in a notebook the kernel reconnects).
 * Query flags, for experiments and tests:
 *   ?transport=websocket   use the WebSocket transport even where WebRTC exists (default "auto": WebRTC,
 *                          else or when its connection cannot be set up the WebSocket)
 *   ?retries=N             how many times to reconnect after a lost connection (default 5)
 *   ?silenceMs=200         end a turn after 200 ms of silence and let replies finish: Chromium's fake
 *                          microphone beeps every 500 ms, and its gaps never reach the default 500 ms
 */

import { CallError, PageCall } from "./realtime.js";

const params = new URLSearchParams(location.search);
const MAX_RECONNECTS = Number(params.get("retries") ?? 5);
const SILENCE_MS = params.has("silenceMs") ? Number(params.get("silenceMs")) : null;
const BARGE_IN = SILENCE_MS === null; // speaking over a reply stops it, unless ?silenceMs asked replies to finish
const FIRST_RETRY_MS = 500; // doubled per attempt up to MAX_RETRY_MS, each scaled by a random 0.8..1.2
const MAX_RETRY_MS = 8000;

const $ = (id) => document.getElementById(id);
const T0 = performance.now();

const transportChoice = params.get("transport") || "auto";
const transports = transportChoice === "auto" ? ["webrtc", "websocket"] : [transportChoice];
const call = new PageCall({
  retry: "then press Connect again",
  bargeIn: BARGE_IN,
  onEvent: onServerEvent,
  onLost: onLost,
  onNotice: (notice) => log(notice.message, "warn"),
  onBargeIn: onBargeIn,
  onTranscript: setTranscript,
});

/** What the page knows, for DevTools and the tests: `rtkitDemo.state`, `.states`, `.events`, `.levels`... */
const demo = (window.rtkitDemo = {
  ready: false, state: "disconnected", states: ["disconnected"], transport: null,
  events: [], keysMinted: 0, transcript: "", bargeIns: [], stats: null,
  levels: { input: 0, output: 0, inputPeak: 0, outputPeak: 0 },
  send: (event) => call.send(event),
});

let config = null; //     {realtimeUrl, model} from /config.json
let wanted = false; //    the user pressed Connect and not Disconnect: a lost connection is re-established
let run = 0; //           bumped by Connect and Disconnect, so that a stale reconnection loop stops
let keyCount = 0;
const tabId = sessionStorage.getItem("rtkit-tab") || Math.random().toString(36).slice(2, 10);
sessionStorage.setItem("rtkit-tab", tabId);

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
  $("mute").disabled = !wanted;
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
      body: JSON.stringify({ sessionId, capabilities: ["audio", ...transports] }),
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

// ---- meters, mute, barge-in ------------------------------------------------------------------------

// The loudest of the last 2048 samples, read ten times a second.
setInterval(() => {
  const peaks = Object.fromEntries(call.measure().map(({ direction, peak }) => [direction, peak]));
  for (const which of ["input", "output"]) {
    const peak = peaks[which] || 0;
    demo.levels[which] = peak;
    demo.levels[`${which}Peak`] = Math.max(demo.levels[`${which}Peak`], peak);
    $(`${which}-level`).value = peak;
  }
}, 100);

// The WebRTC connection's own numbers; its jitter buffer's delay tells a barge-in what was heard.
setInterval(async () => (demo.stats = (await call.readStats()) || demo.stats), 1000);

function toggleMute() {
  call.mute(!call.muted);
  $("mute").textContent = call.muted ? "Unmute" : "Mute";
}

function onBargeIn(record) {
  demo.bargeIns.push(record);
  const cut = record.truncated ? `, the reply cut at ${record.played_ms} ms` : "";
  log(`barge-in over ${record.transport}: ${record.played_ms} ms of the reply were played${cut}`, "info");
}

// ---- a session: key, transport, events -------------------------------------------------------------

/** Open one call with `key`; resolves once the server said `session.created` (null if hung up meanwhile). */
async function openTransport(key) {
  const conn = await call.open({ transport: transportChoice, baseUrl: config.realtimeUrl, model: config.model, key });
  if (!conn) return null;
  log(`${conn.name}: session started`);
  demo.transport = conn.name;
  $("transport").textContent = `transport: ${conn.name}`;
  if (SILENCE_MS !== null) {
    const turn_detection = { type: "server_vad", silence_duration_ms: SILENCE_MS, interrupt_response: false };
    conn.send({ type: "session.update", session: { type: "realtime", audio: { input: { turn_detection } } } });
  }
  return conn;
}

/** A key, then a call; a key refused by the Realtime API (expired on the way) earns one fresh key. */
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
  // Deltas come dozens a second: the transcript and the meter show them, the log does not.
  if (event.type.endsWith(".delta")) return;
  if (event.type === "error") log(`error ${event.error.code}: ${event.error.message}`, "error");
  else log(event.type + (record.status ? ` (${record.status})` : ""));
}

// ---- connect, disconnect, reconnect: this page's one reconnection policy -----------------------------

async function connect() {
  const mine = ++run;
  wanted = true;
  clearMessage();
  setState("connecting");
  await call.resumeAudio(); // allowed now: the click on Connect is the user gesture browsers ask for
  try {
    await call.openMicrophone(); // before a key: no key is minted for a call that cannot have a microphone
    const conn = await openCall();
    if (!conn || mine !== run) return; // Disconnect was pressed meanwhile
    setState("connected");
  } catch (err) {
    if (mine !== run) return;
    fail(err);
  }
}

function disconnect() {
  run += 1;
  wanted = false;
  call.hangUp({ release: true });
  clearMessage();
  setState("disconnected");
}

function fail(err) {
  wanted = false;
  call.hangUp({ release: true });
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

/** The open call is gone (PageCall has hung it up): a fresh key and a new call, with backoff. */
async function onLost(reason) {
  const mine = run;
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
      if (!fresh || mine !== run) return;
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
  $("mute").onclick = toggleMute;
  $("mute").disabled = true;
  $("transport").textContent = `transport: ${transportChoice}`;
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
