// Voice studio page. Plain script, no build step, no external resources: it works offline and,
// because every URL below is relative, under Home Assistant's ingress path prefix.
"use strict";

const TOKEN_KEY = "studio_token";
const MIN_WINDOW = 3;
const MAX_WINDOW = 10;
const BUILD_POLL_MS = 1500;
const SLIDERS = [
  // name, label, min, max, step, help
  ["top_k", "top_k", 1, 100, 1, "candidates per step"],
  ["top_p", "top_p", 0.05, 1, 0.05, "nucleus share"],
  ["temperature", "temperature", 0.1, 2, 0.05, "higher = livelier, less stable"],
  ["repetition_penalty", "repetition penalty", 1, 2, 0.05, "against stutters"],
  ["speed", "speed", 0.5, 2, 0.05, "speaking rate"],
  ["noise_scale", "noise scale", 0, 1, 0.05, "vocoder variation"],
];

const state = { info: null, voices: [], selected: null, pollTimer: null, pickers: {} };
const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

// ------------------------------------------------------------------------------- HTTP
class ApiError extends Error {
  constructor(message, status, field, code) {
    super(message);
    this.status = status;
    this.field = field;
    this.code = code;
  }
}

function authHeaders() {
  // X-Studio-Page: changes without it are refused, so other websites cannot post to the studio.
  const token = localStorage.getItem(TOKEN_KEY);
  return token ? { "X-Studio-Page": "1", "X-Studio-Token": token } : { "X-Studio-Page": "1" };
}

async function api(method, path, body) {
  const options = { method, headers: authHeaders(), credentials: "same-origin" };
  if (body instanceof FormData) {
    options.body = body;
  } else if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new ApiError("the server cannot be reached (" + err.message + ")", 0);
  }
  return readJson(response);
}

async function readJson(response) {
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  }
  if (response.status === 401) {
    $("#token-panel").hidden = false;
  }
  if (!response.ok) {
    const message = (data && data.error) || response.status + " " + response.statusText;
    throw new ApiError(message, response.status, data && data.field, data && data.code);
  }
  return data;
}

// ------------------------------------------------------------------------------- messages
function showMessage(text, kind = "info") {
  const box = $("#message");
  box.textContent = text;
  box.className = "message " + kind;
  box.hidden = false;
  clearTimeout(showMessage.timer);
  if (kind !== "error") showMessage.timer = setTimeout(() => (box.hidden = true), 6000);
}

function clearErrors(form) {
  $$(".field-error", form).forEach((el) => (el.textContent = ""));
  $$(".invalid", form).forEach((el) => el.classList.remove("invalid"));
}

function showError(form, err, slot = "form") {
  const target = $(`.field-error[data-for="${slot}"]`, form) || $(".field-error", form);
  if (target) target.textContent = err.message;
  const input = err.field && form.querySelector(`[name="${err.field}"]`);
  if (input) {
    input.classList.add("invalid");
    if (input.focus && input.type !== "file") input.focus();
  }
  if (!target) showMessage(err.message, "error");
}

// ------------------------------------------------------------------------------- voices list
async function refreshVoices() {
  clearTimeout(state.pollTimer);
  let data;
  try {
    data = await api("GET", "api/voices");
  } catch (err) {
    $("#voices-note").textContent = err.message;
    return;
  }
  state.voices = data.voices;
  renderVoices();
  if (state.selected) {
    const voice = state.voices.find((v) => v.id === state.selected);
    if (voice) renderDetailHeader(voice);
  }
  // A bundle builds in the background: keep the list current until it is done.
  const building = state.voices.some((v) => v.status === "building" || (v.styles || []).some((s) => s.status === "building"));
  // The add-on's models download in the background at first start: say how far it is.
  const fetch = data.models_download;
  const fetching = Boolean(fetch) && fetch.state !== "done" && fetch.state !== "stopped";
  $("#voices-note").textContent = fetching ? modelsNote(fetch) : building ? "building voice bundles…" : "";
  if (building || fetching) state.pollTimer = setTimeout(refreshVoices, BUILD_POLL_MS);
}

function modelsNote(fetch) {
  const percent = fetch.percent === null ? "" : ` ${Math.floor(fetch.percent)}%`;
  const error = fetch.error ? ` (${fetch.error})` : "";
  return `models ${fetch.version}: ${fetch.state}${percent}${error}; voices are ready once they are in place`;
}

function statusBadge(status) {
  const badge = document.createElement("span");
  badge.className = "badge " + status;
  badge.textContent = { ready: "ready", building: "building bundle", unusable: "unusable" }[status] || status;
  return badge;
}

function renderVoices() {
  const body = $("#voices tbody");
  body.replaceChildren();
  $("#no-voices").hidden = state.voices.length > 0;
  for (const voice of state.voices) {
    const row = document.createElement("tr");
    row.dataset.voice = voice.id;
    const name = document.createElement("td");
    name.innerHTML = "<strong></strong><div class='muted'></div>";
    name.firstChild.textContent = voice.id;
    name.lastChild.textContent = voice.description && voice.description !== voice.id ? voice.description : "";
    const language = cell(voice.language || "–");
    const model = cell(voice.model_version || "–");
    const status = document.createElement("td");
    status.className = "status";
    status.append(statusBadge(voice.status));
    if (voice.reason) {
      const reason = document.createElement("div");
      reason.className = "reason";
      reason.textContent = voice.reason;
      status.append(reason);
    }
    const styles = document.createElement("td");
    for (const style of voice.styles || []) {
      const chip = document.createElement("span");
      chip.className = "chip " + (style.status || "");
      chip.textContent = style.name;
      if (style.reason) chip.title = style.reason;
      styles.append(chip);
    }
    const actions = document.createElement("td");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    open.textContent = voice.status === "unusable" ? "Details" : "Open";
    open.addEventListener("click", () => openVoice(voice.id));
    actions.append(open);
    row.append(name, language, model, status, styles, actions);
    body.append(row);
  }
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

// ------------------------------------------------------------------------------- clip picker
class ClipPicker {
  // A clip from a file or the microphone, its waveform with a 3-10 s window, and its check report.
  constructor(root, transcriptInput) {
    root.append($("#clip-picker-template").content.cloneNode(true));
    this.root = root;
    this.transcriptInput = transcriptInput;
    this.file = null;
    this.report = null;
    this.window = null;
    this.canvas = $("canvas", root);
    $(".clip-file", root).addEventListener("change", (event) => {
      if (event.target.files[0]) this.setFile(event.target.files[0]);
    });
    $(".record", root).addEventListener("click", () => this.toggleRecording());
    this.canvas.addEventListener("pointerdown", (event) => this.startDrag(event));
    if (transcriptInput) transcriptInput.addEventListener("change", () => this.file && this.check());
  }

  reset() {
    this.file = null;
    this.report = null;
    this.window = null;
    $(".clip-file", this.root).value = "";
    $(".clip-name", this.root).textContent = "";
    $(".waveform", this.root).hidden = true;
    $(".check", this.root).hidden = true;
  }

  async setFile(file) {
    this.file = file;
    this.window = null;
    $(".clip-name", this.root).textContent = `${file.name} (${(file.size / 1024).toFixed(0)} KB)`;
    await this.check();
  }

  async check() {
    const form = new FormData();
    form.append("clip", this.file, this.file.name);
    form.append("transcript", this.transcriptInput ? this.transcriptInput.value : "");
    if (this.window) {
      form.append("window_start", this.window[0].toFixed(2));
      form.append("window_end", this.window[1].toFixed(2));
    }
    const box = $(".check", this.root);
    box.hidden = false;
    if (this.report) {
      box.classList.add("pending"); // keep the old report in place: no jump under the pointer
    } else {
      box.className = "check pending";
      box.textContent = "Checking the clip…";
    }
    try {
      this.report = await api("POST", "api/check", form);
    } catch (err) {
      this.report = null;
      box.className = "check refused";
      box.textContent = err.message;
      $(".waveform", this.root).hidden = true;
      return;
    }
    const proposed = this.report.proposed_window;
    if (!this.window && proposed) this.window = [proposed.start, proposed.end];
    this.drawWaveform();
    renderReport(box, this.report);
  }

  appendTo(form) {
    if (!this.file) return;
    form.append("clip", this.file, this.file.name);
    if (this.window) {
      form.append("window_start", this.window[0].toFixed(2));
      form.append("window_end", this.window[1].toFixed(2));
    }
  }

  // ---- waveform and window
  drawWaveform() {
    const wave = $(".waveform", this.root);
    const peaks = (this.report && this.report.waveform) || [];
    wave.hidden = peaks.length === 0;
    if (!peaks.length) return;
    const { width, height } = this.canvas;
    const g = this.canvas.getContext("2d");
    const styles = getComputedStyle(document.documentElement);
    g.clearRect(0, 0, width, height);
    const duration = this.report.duration;
    if (this.window) {
      const [x0, x1] = this.window.map((t) => (t / duration) * width);
      g.fillStyle = styles.getPropertyValue("--window").trim();
      g.fillRect(x0, 0, x1 - x0, height);
      g.fillStyle = styles.getPropertyValue("--primary").trim();
      g.fillRect(x0, 0, 3, height);
      g.fillRect(x1 - 3, 0, 3, height);
    }
    g.fillStyle = styles.getPropertyValue("--wave").trim();
    const step = width / peaks.length;
    for (let i = 0; i < peaks.length; i++) {
      const h = Math.max(1, peaks[i] * (height - 8));
      g.fillRect(i * step, (height - h) / 2, Math.max(1, step - 0.5), h);
    }
    const info = $(".window-info", this.root);
    info.textContent = this.window
      ? `Using ${this.window[0].toFixed(1)}–${this.window[1].toFixed(1)} s of ${duration.toFixed(1)} s ` +
        "(drag the window, or its edges; 3–10 s). The transcript must match this part."
      : `${duration.toFixed(1)} s`;
  }

  startDrag(event) {
    if (!this.window || !this.report) return;
    const rect = this.canvas.getBoundingClientRect();
    const duration = this.report.duration;
    const toTime = (x) => Math.min(duration, Math.max(0, ((x - rect.left) / rect.width) * duration));
    const grab = toTime(event.clientX);
    const edge = (6 / rect.width) * duration;
    const [start0, end0] = this.window;
    let mode = "move";
    if (Math.abs(grab - start0) < edge) mode = "start";
    else if (Math.abs(grab - end0) < edge) mode = "end";
    else if (grab < start0 || grab > end0) {
      const length = end0 - start0;
      const start = Math.min(Math.max(0, grab - length / 2), duration - length);
      this.window = [start, start + length];
      this.drawWaveform();
    }
    const origin = this.window.slice();
    const move = (e) => {
      const t = toTime(e.clientX);
      let [start, end] = origin;
      if (mode === "move") {
        const shift = Math.min(Math.max(t - grab, -start), duration - end);
        start += shift;
        end += shift;
      } else if (mode === "start") {
        start = Math.min(Math.max(t, end - MAX_WINDOW, 0), end - MIN_WINDOW);
      } else {
        end = Math.max(Math.min(t, start + MAX_WINDOW, duration), start + MIN_WINDOW);
      }
      this.window = [start, end];
      this.drawWaveform();
    };
    const up = () => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      this.check(); // the report follows the chosen window
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }

  // ---- recording
  async toggleRecording() {
    const button = $(".record", this.root);
    if (this.recorder) {
      this.recorder.stop();
      return;
    }
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      $(".mic-note", this.root).hidden = false;
      showMessage("Recording needs HTTPS or localhost: open the studio through Home Assistant over HTTPS, or upload a file.", "error");
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false } });
    } catch (err) {
      $(".mic-note", this.root).hidden = false;
      showMessage("The microphone is not available: " + err.message, "error");
      return;
    }
    const parts = [];
    this.recorder = new MediaRecorder(stream);
    this.recorder.ondataavailable = (event) => parts.push(event.data);
    this.recorder.onstop = async () => {
      stream.getTracks().forEach((track) => track.stop());
      this.recorder = null;
      button.textContent = "● Record";
      button.classList.remove("recording");
      try {
        // Browsers record Opus in WebM; the server takes WAV, so it is decoded and re-encoded here.
        const wav = await toWav(new Blob(parts));
        await this.setFile(new File([wav], "recording.wav", { type: "audio/wav" }));
      } catch (err) {
        showMessage("The recording could not be read: " + err.message, "error");
      }
    };
    this.recorder.start();
    button.textContent = "■ Stop";
    button.classList.add("recording");
  }
}

async function toWav(blob) {
  const context = new AudioContext();
  try {
    const audio = await context.decodeAudioData(await blob.arrayBuffer());
    const samples = audio.getChannelData(0);
    const pcm = new Int16Array(samples.length);
    for (let i = 0; i < samples.length; i++) pcm[i] = Math.max(-1, Math.min(1, samples[i])) * 32767;
    return new Blob([wavHeader(audio.sampleRate, pcm.byteLength), pcm], { type: "audio/wav" });
  } finally {
    context.close();
  }
}

function wavHeader(rate, dataBytes) {
  const view = new DataView(new ArrayBuffer(44));
  const text = (offset, s) => [...s].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + dataBytes, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true);
  view.setUint16(22, 1, true);
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, dataBytes, true);
  return view.buffer;
}

// ------------------------------------------------------------------------------- check report
const REPORT_ROWS = [
  ["duration", "Duration", (v) => v.toFixed(1) + " s"],
  ["sample_rate", "Sample rate", (v) => (v / 1000).toFixed(1) + " kHz"],
  ["channels", "Channels", (v) => (v === 1 ? "mono" : v + " (mixed to mono)")],
  ["peak_dbfs", "Peak", (v) => v.toFixed(1) + " dBFS"],
  ["clipped_share", "Clipped samples", percent],
  ["silence_share", "Silence", percent],
  ["loudness_dbfs", "Loudness", (v) => v.toFixed(1) + " dBFS"],
  ["snr_db", "Noise (SNR)", (v) => v.toFixed(0) + " dB"],
  ["transcript_fit", "Transcript vs duration", (v) => v],
];

function percent(v) {
  return (v * 100).toFixed(v < 0.01 && v > 0 ? 2 : 1) + " %";
}

function renderReport(box, report) {
  const verdict = report.verdict || "usable";
  box.className = "check " + verdict;
  box.replaceChildren();
  const head = document.createElement("div");
  head.className = "verdict";
  head.textContent = report.summary || { good: "Good clip", usable: "Usable, with warnings", refused: "Cannot be used" }[verdict] || verdict;
  box.append(head);
  const table = document.createElement("table");
  for (const [key, label, format] of REPORT_ROWS) {
    const value = report.metrics ? report.metrics[key] : report[key];
    if (value === undefined || value === null) continue;
    const row = table.insertRow();
    row.insertCell().textContent = label;
    row.insertCell().textContent = format(value);
  }
  box.append(table);
  if (report.advice && report.advice.length) {
    const list = document.createElement("ul");
    for (const advice of report.advice) {
      const item = document.createElement("li");
      item.textContent = advice;
      list.append(item);
    }
    box.append(list);
  }
}

// ------------------------------------------------------------------------------- add a voice
async function saveVoice(event) {
  event.preventDefault();
  const form = event.target;
  clearErrors(form);
  const picker = state.pickers.voice;
  if (!picker.file) return showError(form, new ApiError("Upload or record a clip first.", 400, "clip"));
  if (!form.transcript.value.trim())
    return showError(form, new ApiError("Type the transcript: exactly what is said in the clip.", 400, "transcript"));
  if (!form.consent.checked)
    return showError(form, new ApiError("Tick the box to confirm you have this speaker's permission.", 400, "consent"));
  await submitVoice(form, picker, false);
}

async function submitVoice(form, picker, overwrite) {
  const data = new FormData();
  for (const name of ["id", "transcript", "language", "prompt_language", "description", "gpt_path", "sovits_path"]) {
    data.append(name, form.elements[name].value);
  }
  data.append("consent", form.consent.checked ? "1" : "");
  for (const name of ["gpt", "sovits"]) if (form.elements[name].files[0]) data.append(name, form.elements[name].files[0]);
  for (const file of form.elements.aux_clips.files) data.append("aux_clips", file);
  if (overwrite) data.append("overwrite", "1");
  picker.appendTo(data);
  const button = $("#save-voice");
  button.disabled = true;
  button.textContent = "Saving…";
  try {
    const voice = await api("POST", "api/voices", data);
    showMessage(`Voice “${voice.id}” saved; its bundle is being built.`, "success");
    form.reset();
    picker.reset();
    $("#new-voice").hidden = true;
    await refreshVoices();
    openVoice(voice.id);
  } catch (err) {
    if (err.code === "exists" && !overwrite && confirm(`${err.message}\n\nReplace it?`)) {
      return submitVoice(form, picker, true);
    }
    showError(form, err);
  } finally {
    button.disabled = false;
    button.textContent = "Save voice";
  }
}

// ------------------------------------------------------------------------------- one voice
function openVoice(id) {
  const voice = state.voices.find((v) => v.id === id);
  if (!voice) return;
  state.selected = id;
  $("#voice-detail").hidden = false;
  renderDetailHeader(voice);
  const edit = $("#edit-form");
  clearErrors(edit);
  edit.description.value = voice.description || "";
  edit.language.value = voice.language || "auto";
  edit.prompt_language.value = voice.prompt_language || voice.language || "auto";
  edit.transcript.value = voice.transcript || "";
  edit.new_id.value = voice.id;
  setSliders(voice.params || (state.info && state.info.params) || {});
  $("#preview-audio").removeAttribute("src");
  $("#preview-timing").textContent = "";
  $("#voice-detail").scrollIntoView({ behavior: "smooth", block: "start" });
}

function renderDetailHeader(voice) {
  $("#detail-title").textContent = voice.id;
  const badge = $("#detail-status");
  badge.className = "badge " + voice.status;
  badge.textContent = statusBadge(voice.status).textContent;
  $("#detail-reason").hidden = !voice.reason;
  $("#detail-reason").textContent = voice.reason || "";
  // The saved clip's check, so a voice that sounds off says why (noise, clipping, transcript).
  const check = $("#detail-check");
  check.hidden = !voice.check;
  if (voice.check) {
    const verdict = { good: "Reference clip: good", usable: "Reference clip: usable", refused: "Reference clip: refused" };
    check.className = "detail-check " + voice.check.verdict;
    check.textContent = [verdict[voice.check.verdict] || voice.check.verdict, ...(voice.check.advice || [])].join(" · ");
  }
  const select = $("#preview-form").elements.style;
  const chosen = select.value;
  select.replaceChildren(new Option("main clip", ""));
  const list = $("#styles");
  list.replaceChildren();
  for (const style of voice.styles || []) {
    select.append(new Option(style.name, style.name));
    const item = document.createElement("li");
    item.dataset.style = style.name;
    const name = document.createElement("span");
    name.textContent = style.name;
    const play = document.createElement("button");
    play.type = "button";
    play.className = "play-style";
    play.textContent = "▶";
    play.title = "preview this style";
    play.addEventListener("click", () => {
      select.value = style.name;
      playPreview();
    });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "link danger remove-style";
    remove.textContent = "remove";
    remove.addEventListener("click", () => removeStyle(voice.id, style.name));
    item.append(name, statusBadge(style.status || "ready"), play, remove);
    if (style.reason) item.title = style.reason;
    list.append(item);
  }
  if (!(voice.styles || []).length) {
    const empty = document.createElement("li");
    empty.className = "muted";
    empty.textContent = "No styles yet: the main clip speaks.";
    list.append(empty);
  }
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
}

function setSliders(params) {
  const box = $("#sliders");
  box.replaceChildren();
  for (const [name, label, min, max, step, help] of SLIDERS) {
    const wrap = document.createElement("label");
    wrap.className = "slider";
    const value = params[name] ?? state.info.params[name];
    wrap.innerHTML = `<span class="name"></span><input type="range"><output></output><span class="hint"></span>`;
    wrap.querySelector(".name").textContent = label;
    wrap.querySelector(".hint").textContent = help;
    const input = wrap.querySelector("input");
    Object.assign(input, { name, min, max, step, value });
    const output = wrap.querySelector("output");
    output.textContent = value;
    input.addEventListener("input", () => (output.textContent = input.value));
    box.append(wrap);
  }
  const seed = document.createElement("label");
  seed.className = "slider";
  seed.innerHTML = `<span class="name">seed</span><input type="number" name="seed" min="0" step="1" placeholder="random"><span></span><span class="hint">same seed = same take</span>`;
  seed.querySelector("input").value = params.seed ?? "";
  box.append(seed);
}

function currentParams() {
  const params = {};
  for (const [name] of SLIDERS) params[name] = Number($(`#sliders [name="${name}"]`).value);
  const seed = $('#sliders [name="seed"]').value;
  params.seed = seed === "" ? null : Number(seed);
  return params;
}

async function playPreview(event) {
  if (event) event.preventDefault();
  const form = $("#preview-form");
  clearErrors(form);
  const query = new URLSearchParams({ text: form.text.value });
  if (form.style.value) query.set("style", form.style.value);
  for (const [name, value] of Object.entries(currentParams())) if (value !== null) query.set(name, value);
  const button = $("#play-preview");
  button.disabled = true;
  $("#preview-timing").textContent = "speaking…";
  try {
    const timing = await playStream(`api/voices/${encodeURIComponent(state.selected)}/preview?${query}`, $("#preview-audio"));
    $("#preview-timing").textContent = `first audio after ${timing.first.toFixed(2)} s, ${timing.seconds.toFixed(1)} s of speech`;
  } catch (err) {
    $("#preview-timing").textContent = "";
    showError(form, err, "preview");
  } finally {
    button.disabled = false;
  }
}

async function playStream(url, audio) {
  // The server streams a WAV while it speaks: play each piece as it arrives (Web Audio), then hand
  // the whole take to the <audio> element to replay or download.
  const started = performance.now();
  const response = await fetch(url, { headers: authHeaders(), credentials: "same-origin" });
  if (!response.ok) await readJson(response);
  const reader = response.body.getReader();
  const context = new AudioContext();
  let rate = 0;
  let pending = new Uint8Array(0);
  let playAt = 0;
  let first = null;
  const pcmParts = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending = concat(pending, value);
    if (!rate) {
      if (pending.length < 44) continue;
      rate = new DataView(pending.buffer, pending.byteOffset).getUint32(24, true);
      pending = pending.slice(44);
    }
    const usable = pending.length - (pending.length % 2);
    if (!usable) continue;
    const pcm = new Int16Array(pending.slice(0, usable).buffer);
    pending = pending.slice(usable);
    pcmParts.push(pcm);
    if (first === null) {
      first = (performance.now() - started) / 1000;
      playAt = context.currentTime + 0.05;
    }
    const buffer = context.createBuffer(1, pcm.length, rate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    playAt = Math.max(playAt, context.currentTime);
    source.start(playAt);
    playAt += buffer.duration;
  }
  const bytes = pcmParts.reduce((n, part) => n + part.byteLength, 0);
  audio.src = URL.createObjectURL(new Blob([wavHeader(rate, bytes), ...pcmParts], { type: "audio/wav" }));
  const remaining = Math.max(0, playAt - context.currentTime);
  setTimeout(() => context.close(), remaining * 1000 + 500);
  return { first: first ?? 0, seconds: bytes / 2 / (rate || 1) };
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

async function saveParams() {
  const form = $("#preview-form");
  clearErrors(form);
  try {
    await api("PUT", `api/voices/${encodeURIComponent(state.selected)}/params`, currentParams());
    showMessage("Settings saved into voice.yaml.", "success");
    await refreshVoices();
  } catch (err) {
    showError(form, err, "preview");
  }
}

async function saveStyle(event) {
  event.preventDefault();
  const form = event.target;
  clearErrors(form);
  const picker = state.pickers.style;
  if (!picker.file) return showError(form, new ApiError("Upload or record a clip for this style.", 400, "clip"));
  await submitStyle(form, picker, false);
}

async function submitStyle(form, picker, overwrite) {
  const data = new FormData();
  data.append("style", form.elements.style.value);
  data.append("transcript", form.elements.transcript.value);
  if (overwrite) data.append("overwrite", "1");
  picker.appendTo(data);
  const button = $("#save-style");
  button.disabled = true;
  try {
    await api("POST", `api/voices/${encodeURIComponent(state.selected)}/styles`, data);
    showMessage(`Style “${form.elements.style.value}” added.`, "success");
    form.reset();
    picker.reset();
    $("#style-add").open = false;
    await refreshVoices();
  } catch (err) {
    if (err.code === "exists" && !overwrite && confirm(`${err.message}\n\nReplace it?`)) {
      return submitStyle(form, picker, true);
    }
    showError(form, err);
  } finally {
    button.disabled = false;
  }
}

async function removeStyle(voiceId, name) {
  if (!confirm(`Remove the style “${name}” of ${voiceId}? Its clip is deleted.`)) return;
  try {
    await api("DELETE", `api/voices/${encodeURIComponent(voiceId)}/styles/${encodeURIComponent(name)}`);
    showMessage(`Style “${name}” removed.`, "success");
    await refreshVoices();
  } catch (err) {
    showMessage(err.message, "error");
  }
}

async function saveEdit(event) {
  event.preventDefault();
  const form = event.target;
  clearErrors(form);
  const changes = {
    description: form.description.value,
    language: form.language.value,
    prompt_language: form.prompt_language.value,
    transcript: form.transcript.value,
  };
  if (form.new_id.value.trim() !== state.selected) {
    if (!confirm(`Rename ${state.selected} to ${form.new_id.value.trim()}? Home Assistant automations that name the old id stop finding it.`)) return;
    changes.new_id = form.new_id.value.trim();
  }
  try {
    const voice = await api("PATCH", `api/voices/${encodeURIComponent(state.selected)}`, changes);
    showMessage(`Voice “${voice.id}” saved.`, "success");
    state.selected = voice.id;
    await refreshVoices();
    openVoice(voice.id);
  } catch (err) {
    showError(form, err, "edit");
  }
}

async function deleteVoice() {
  const id = state.selected;
  if (!confirm(`Delete the voice ${id} with its clips and styles? This cannot be undone.`)) return;
  try {
    await api("DELETE", `api/voices/${encodeURIComponent(id)}`);
    showMessage(`Voice “${id}” deleted.`, "success");
    state.selected = null;
    $("#voice-detail").hidden = true;
    await refreshVoices();
  } catch (err) {
    showMessage(err.message, "error");
  }
}

// ------------------------------------------------------------------------------- start
async function loadInfo() {
  state.info = await api("GET", "api/info");
  for (const select of $$("select.languages")) {
    for (const mode of state.info.languages) select.append(new Option(mode, mode));
    if (select.dataset.default !== undefined) select.value = select.dataset.default;
  }
  const models = await api("GET", "api/models");
  for (const kind of ["gpt", "sovits"]) {
    const select = $(`select[name="${kind}_path"]`);
    for (const path of models[kind]) select.append(new Option(path, path));
  }
}

async function start() {
  const voiceForm = $("#voice-form");
  const styleForm = $("#style-form");
  state.pickers.voice = new ClipPicker($(".clip-picker", voiceForm), voiceForm.transcript);
  state.pickers.style = new ClipPicker($(".clip-picker", styleForm), styleForm.transcript);
  voiceForm.addEventListener("submit", saveVoice);
  styleForm.addEventListener("submit", saveStyle);
  $("#edit-form").addEventListener("submit", saveEdit);
  $("#preview-form").addEventListener("submit", playPreview);
  $("#save-params").addEventListener("click", saveParams);
  $("#reset-params").addEventListener("click", () => {
    const voice = state.voices.find((v) => v.id === state.selected);
    setSliders((voice && voice.params) || state.info.params);
  });
  $("#delete-voice").addEventListener("click", deleteVoice);
  $("#add-voice").addEventListener("click", () => {
    $("#new-voice").hidden = false;
    $("#new-voice").scrollIntoView({ behavior: "smooth" });
  });
  for (const button of $$("[data-close]")) button.addEventListener("click", () => ($(`#${button.dataset.close}`).hidden = true));
  $("#token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    localStorage.setItem(TOKEN_KEY, $("#token").value);
    $("#token-panel").hidden = true;
    await boot();
  });
  if (!navigator.mediaDevices) $$(".mic-note").forEach((note) => (note.hidden = false));
  await boot();
}

async function boot() {
  try {
    await loadInfo();
  } catch (err) {
    showMessage(err.message, "error");
    return;
  }
  await refreshVoices();
  document.body.dataset.ready = "1"; // for the browser test: the page has loaded its data
}

start();
