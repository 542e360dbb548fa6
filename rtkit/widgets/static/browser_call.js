/*
 * rtkit BrowserCall: the notebook's browser tab makes the Realtime call; the kernel is its backend.
 *
 *   kernel (Python)                        this tab                              Realtime API / emulator
 *   mints an ek_ key  ── open {key} ──▶    microphone, RTCPeerConnection,  ──▶  POST {base_url}/realtime/calls
 *                                          "oai-events" data channel            (SDP offer, Bearer ek_...)
 *   states, events,   ◀── event, levels,   the reply plays on an <audio>    ◀──  voice track + JSON events
 *   levels, metrics       stats, opened,
 *                         failed, lost
 *
 * The key arrives in a custom widget message and lives only in this page's memory: synced widget state is
 * saved into the .ipynb, messages are not. One attempt per "open" message; retrying, backoff and fresh keys
 * are the kernel's business (one reconnection policy, rtkit.session.ReconnectPolicy, for both kinds of call).
 *
 * The kernel's end of this protocol is rtkit/widgets/page.py (PageBridge; each call this page makes is a
 * PageTransport there), owned by rtkit.widgets.BrowserCall together with the widget that draws this card.
 *
 * Messages from the kernel: {kind: "open", attempt, frontend, key, transport}, {kind: "send", event},
 *   {kind: "hangup", attempt?, frontend?}, {kind: "probe_microphone", probe}, {kind: "recording", request}.
 * Messages to the kernel (each carries `frontend`, this page's id): hello {webrtc, origin}, bye, event {event},
 *   levels {levels: [{direction, rms, peak, ms}]}, stats {stats}, opened {attempt, transport, timings},
 *   failed {attempt, code, message, hint?, status?, body?, retryAfter?}, lost {attempt, reason},
 *   notice {type, message, ...}, action {action: "connect" | "disconnect"} (the widget's buttons),
 *   microphone {probe, ok, code?, message?, hint?},
 *   recording {request, rate, start, now, outputLatency, origins, users, replies}
 *   with two binary buffers (the microphone as sent and the reply as played, PCM16: see realtime.js's Recorder).
 *
 * The call belongs to the widget's *model* (anywidget's `initialize`), not to a view: showing the widget
 * twice does not open two calls, and a call survives its output cell being cleared. Plain ES2020.
 *
 * What the call itself does (the microphone, opening a session over WebRTC or the WebSocket, meters, playback,
 * barge-in) is realtime.js's PageCall, shared with the broker's demo page; this file is the kernel's messages
 * and the card. The widget's module is rtkit/static/realtime.js followed by this file: `rtkit.widgets.page`
 * joins them, as anywidget loads a single module. So the names below that this file does not define (PageCall,
 * CallError) come from realtime.js.
 */

const LEVEL_INTERVAL_MS = 50; //     20 level readings a second per direction, like a VU meter
const STATS_INTERVAL_MS = 1000; //   getStats() once a second: its numbers are cumulative anyway
//                                   How to try again, at the end of a microphone failure's hint:
const RETRY = "then run `await call.connect()` again (or press Connect)";

/** The calls of this page, by the widget's `_call_id`: how a view finds the call its model owns. */
const calls = new Map();

const dbfs = (x) => (x > 0 ? Math.round(200 * Math.log10(x)) / 10 : null); // JSON has no -Infinity

// ---- the call: one per widget model, driven by the kernel's messages ----------------------------------

class KernelCall extends EventTarget {
  constructor(model) {
    super();
    this.model = model;
    this.id = Math.random().toString(36).slice(2, 10); // this page's id: the kernel talks to one page
    this.attempt = 0; //      the kernel's attempt this page is working on
    this.levels = { input: 0, output: 0 }; // latest peaks, 0..1, for the views' bars
    this.call = new PageCall({
      retry: RETRY,
      // Every event goes to the kernel as is (WebSocket audio deltas too: a kernel-side session sees them).
      onEvent: (event) => this.tell({ kind: "event", event }),
      onLost: (reason) => this.lost(reason),
      onNotice: (notice) => this.tell({ kind: "notice", ...notice }),
      onBargeIn: (record) => this.tell({ kind: "notice", type: "rtkit.barge_in", ...record }),
      onTranscript: () => this.emit("transcript"),
    });
    this.call.mute(model.get("muted"));

    this.onMessage = (msg) => this.onKernelMessage(msg);
    model.on("msg:custom", this.onMessage);
    this.onMute = () => this.call.mute(this.model.get("muted"));
    model.on("change:muted", this.onMute);
    this.onPageHide = () => this.tell({ kind: "bye" });
    window.addEventListener("pagehide", this.onPageHide);
    this.levelTimer = setInterval(() => this.measure(), LEVEL_INTERVAL_MS);
    this.statsTimer = setInterval(() => this.readStats(), STATS_INTERVAL_MS);
    // The page's origin: a kernel that runs the emulator opens its CORS to this page (and only to it).
    this.tell({ kind: "hello", webrtc: typeof RTCPeerConnection === "function", origin: window.location.origin });
  }

  get transcript() {
    return this.call.transcript;
  }

  get stats() {
    return this.call.stats;
  }

  resumeAudio() {
    this.call.resumeAudio(); // a click is the user gesture browsers ask for before they play sound
  }

  dispose() {
    clearInterval(this.levelTimer);
    clearInterval(this.statsTimer);
    window.removeEventListener("pagehide", this.onPageHide);
    this.model.off("msg:custom", this.onMessage);
    this.model.off("change:muted", this.onMute);
    this.call.close();
  }

  tell(message) {
    this.model.send({ ...message, frontend: this.id });
  }

  /** Something the views show at once (levels, stats, transcript); the kernel's traits carry the rest. */
  emit(what) {
    this.dispatchEvent(new Event(what));
  }

  onKernelMessage(msg) {
    if (msg.frontend && msg.frontend !== this.id) return; // meant for another tab showing the same notebook
    if (msg.kind === "open") this.open(msg);
    else if (msg.kind === "send") this.send(msg.event);
    else if (msg.kind === "probe_microphone") this.probeMicrophone(msg.probe);
    else if (msg.kind === "recording") this.handOverRecording(msg.request);
    else if (msg.kind === "hangup" && (!msg.attempt || msg.attempt === this.attempt)) {
      this.attempt = 0; // an attempt still under way sees this and closes what it opened
      this.hangUp({ release: !msg.attempt }); // a full hang-up also releases the microphone
    }
  }

  // ---- one attempt, as the kernel asked: retrying, backoff and fresh keys are the kernel's ---------------

  async open({ attempt, key, transport }) {
    this.hangUp(); // a new key replaces whatever was open; the microphone stays
    this.attempt = attempt;
    const timings = {};
    try {
      const { baseUrl, headers } = apiAddress(this.model.get("base_url"));
      // The widget's `model` trait is the model's name.
      const conn = await this.call.open({ transport, baseUrl, headers, model: this.model.get("model"), key, timings });
      if (!conn || attempt !== this.attempt) return; // the kernel gave up on this attempt meanwhile
      this.tell({ kind: "opened", attempt, transport: conn.name, timings });
    } catch (err) {
      if (attempt !== this.attempt) return;
      const report = err instanceof CallError ? err.report() : { code: "upstream_unreachable", message: String(err) };
      this.tell({ kind: "failed", attempt, ...report });
    }
  }

  lost(reason) {
    this.resetLevels();
    this.tell({ kind: "lost", attempt: this.attempt, reason });
  }

  hangUp({ release = false } = {}) {
    this.call.hangUp({ release });
    this.resetLevels();
  }

  resetLevels() {
    this.levels = { input: 0, output: 0 };
    this.emit("levels");
  }

  send(event) {
    if (!this.call.send(event)) this.tell({ kind: "notice", type: "rtkit.send_dropped", event_type: event.type });
  }

  /** Whether this page may use a microphone, asked the way a call asks; one that was not open is closed again. */
  async probeMicrophone(probe) {
    const opened = !this.call.mic;
    try {
      await this.call.openMicrophone();
      if (opened && !this.call.conn) this.call.releaseMicrophone();
      this.tell({ kind: "microphone", probe, ok: true });
    } catch (err) {
      const report = err instanceof CallError ? err.report() : { code: "microphone_unavailable", message: String(err) };
      this.tell({ kind: "microphone", probe, ok: false, ...report });
    }
  }

  /** The page's recording, as anywidget's binary buffers rather than base64 in the JSON (a minute is 5.8 MB). */
  async handOverRecording(request) {
    const r = await this.call.recording();
    if (!r) return this.tell({ kind: "recording", request, rate: 24000, start: 0, now: 0, origins: [], users: [], replies: [] });
    const { left, right, ...meta } = r;
    this.model.send({ kind: "recording", request, frontend: this.id, ...meta }, undefined, [left.buffer, right.buffer]);
  }

  /** Twenty times a second: RMS and peak per direction, in dBFS, to the kernel; peaks to the views' bars. */
  measure() {
    const readings = this.call.measure();
    if (readings.length === 0) return;
    const levels = readings.map(({ direction, rms, peak }) => {
      this.levels[direction] = peak;
      return { direction, rms: dbfs(rms), peak: dbfs(peak), ms: LEVEL_INTERVAL_MS };
    });
    this.tell({ kind: "levels", levels });
    this.emit("levels");
  }

  async readStats() {
    const stats = await this.call.readStats();
    if (!stats) return;
    this.tell({ kind: "stats", stats });
    this.emit("stats");
  }
}

/**
 * Where the API is, from this page. An absolute `base_url` is used as is. A relative one ("proxy/8765/v1")
 * is a path on this Jupyter server: jupyter-server-proxy's route to the kernel's emulator, same origin as the
 * page (no CORS, no mixed content on an https hub). The server guards POSTs with its XSRF cookie, which
 * the page echoes in a header, as JupyterLab's own requests do; the header never goes to another origin.
 */
function apiAddress(baseUrl) {
  if (/^https?:\/\//.test(baseUrl)) return { baseUrl, headers: {} };
  const config = document.getElementById("jupyter-config-data");
  const root = config ? JSON.parse(config.textContent).baseUrl || "/" : "/";
  const url = new URL(root.replace(/\/?$/, "/") + baseUrl.replace(/^\//, ""), window.location.origin);
  const xsrf = document.cookie.match(/(?:^|; )_xsrf=([^;]*)/);
  return { baseUrl: url.href.replace(/\/$/, ""), headers: xsrf ? { "X-XSRFToken": decodeURIComponent(xsrf[1]) } : {} };
}

// ---- the view: state, message, meters, stats, transcript, two buttons -------------------------------

function element(tag, className, parent, text = "") {
  const el = document.createElement(tag);
  el.className = className;
  el.textContent = text;
  if (parent) parent.append(el);
  return el;
}

function render({ model, el }) {
  const call = calls.get(model.get("_call_id"));
  const root = element("div", "rtkit-call", el);
  const head = element("div", "rtkit-call-head", root);
  const light = element("span", "rtkit-call-light", head);
  const state = element("b", "rtkit-call-state", head);
  const where = element("span", "rtkit-call-where", head);
  const connect = element("button", "rtkit-call-connect", head, "Connect");
  const mute = element("button", "rtkit-call-mute", head);
  const hangup = element("button", "rtkit-call-hangup", head, "Hang up");
  const message = element("div", "rtkit-call-message", root);
  const bars = {};
  for (const [direction, label] of [["input", "microphone"], ["output", "model"]]) {
    const row = element("div", "rtkit-call-meter", root);
    row.dataset.direction = direction;
    element("span", "rtkit-call-meter-label", row, label);
    bars[direction] = element("span", "rtkit-call-bar", element("span", "rtkit-call-track", row));
  }
  const stats = element("div", "rtkit-call-stats", root);
  const transcript = element("div", "rtkit-call-transcript", root);

  const drawState = () => {
    const status = model.get("status");
    root.dataset.state = status;
    state.textContent = status;
    const transport = model.get("transport");
    where.textContent = `${transport ? `${transport} · ` : ""}${model.get("base_url")} · ${model.get("model")}`;
    connect.disabled = status === "connected" || status === "connecting";
    hangup.disabled = status === "disconnected" || status === "failed";
    mute.textContent = model.get("muted") ? "Unmute" : "Mute";
    root.dataset.muted = model.get("muted");
    message.textContent = model.get("message");
    message.dataset.kind = model.get("message_kind");
    message.hidden = !model.get("message");
  };
  const drawLevels = () => {
    for (const direction of ["input", "output"]) {
      // Peaks on a dB scale from -60 to 0, so quiet speech still moves the bar.
      const db = dbfs(call.levels[direction]);
      bars[direction].style.width = `${db === null ? 0 : Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
    }
  };
  const drawStats = () => {
    const s = call.stats;
    const ms = (x) => (x == null ? "–" : `${x.toFixed(1)} ms`);
    stats.textContent = s
      ? `RTT ${ms(s.rtt_ms)} · jitter ${ms(s.jitter_ms)} · jitter buffer ${ms(s.jitter_buffer_ms)} · ` +
        `packets lost ${s.packets_lost ?? "–"}` +
        // What the jitter buffer did to the voice so far: stretched to wait, sped up to catch up.
        (s.inserted_ms == null ? "" : ` · voice stretched +${Math.round(s.inserted_ms)} / −${Math.round(s.removed_ms ?? 0)} ms`)
      : "";
  };
  const drawTranscript = () => (transcript.textContent = call.transcript);

  connect.onclick = () => {
    call.resumeAudio();
    call.tell({ kind: "action", action: "connect" });
  };
  hangup.onclick = () => call.tell({ kind: "action", action: "disconnect" });
  mute.onclick = () => {
    model.set("muted", !model.get("muted")); // a synced trait: the kernel sees `call.muted` change too
    model.save_changes();
  };
  root.onclick = () => call.resumeAudio();
  const traits = ["status", "message", "message_kind", "transport", "base_url", "model", "muted"];
  for (const name of traits) model.on(`change:${name}`, drawState);
  call.addEventListener("levels", drawLevels);
  call.addEventListener("stats", drawStats);
  call.addEventListener("transcript", drawTranscript);
  drawState();
  drawLevels();
  drawStats();
  drawTranscript();
  return () => {
    for (const name of traits) model.off(`change:${name}`, drawState);
    call.removeEventListener("levels", drawLevels);
    call.removeEventListener("stats", drawStats);
    call.removeEventListener("transcript", drawTranscript);
  };
}

function initialize({ model }) {
  const id = model.get("_call_id");
  const call = new KernelCall(model);
  calls.set(id, call);
  return () => {
    call.dispose();
    calls.delete(id);
  };
}

export default { initialize, render };
