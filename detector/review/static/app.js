// Revet review page. Plain JavaScript, no libraries, nothing fetched from elsewhere.
// Data: window.REVET_DATA (candidates.js). Coordinates: scene pixels (x right, y down).
// Saving: with the revet server (page served over http with /api/decisions) every decision is
// POSTed as it is made; otherwise decisions live in localStorage and Export downloads them.
(function () {
  "use strict";
  const DATA = window.REVET_DATA;
  const SCENE = DATA.scene, CLASSES = DATA.classes, CANDS = DATA.candidates;
  // class colours from detector.display.CLASS_COLOURS (one palette for every picture and page)
  const PALETTE = DATA.palette && DATA.palette.length ? DATA.palette : [[255, 255, 255]];
  const STATUS_COLOUR = {accepted: "#5fd47f", rejected: "#9a9a9a", relabelled: "#ffa640", drawn: "#58a6ff"};
  const colour = (c) => { const i = CLASSES.indexOf(c); const p = i < 0 ? [255, 255, 255] : PALETTE[i % PALETTE.length];
                          return `rgb(${p[0]},${p[1]},${p[2]})`; };
  const $ = (id) => document.getElementById(id);
  const view = $("view"), vctx = view.getContext("2d");
  const ov = $("overview"), octx = ov.getContext("2d");
  const STORE_KEY = "revet-review:" + SCENE.name + ":" + DATA.model + ":" + CANDS.length;

  // ---------------------------------------------------------------- state
  const decisions = new Map();      // id -> decision (server's field names)
  const undoStack = [];             // {id, prev: decision|null, index}
  let index = 0, shownAt = performance.now();
  let served = false, chain = Promise.resolve(), saveError = null, pendingSaves = 0;
  let drawMode = false, drawClass = CLASSES[0], dragging = null;
  let noteFor = null;              // candidate id the note field belongs to
  let zoomed = true;                // true: candidate view; false: whole scene
  const cam = {cx: SCENE.width / 2, cy: SCENE.height / 2, s: 1};
  const stats = {lastKeyMs: 0, lastRenderMs: 0, renders: 0};

  // ---------------------------------------------------------------- pyramid tiles
  const L = SCENE.levels, T = SCENE.tile, TOP = SCENE.top_scale || 1;
  const levelScale = (z) => TOP * Math.pow(2, L - 1 - z);  // scene px per level px
  const tiles = new Map();          // "z/y/x" -> Image (insertion order = LRU)
  const MAX_TILES = 400;
  let renderQueued = false;
  function tile(z, y, x) {
    const key = z + "/" + y + "_" + x;
    let im = tiles.get(key);
    if (im) { tiles.delete(key); tiles.set(key, im); return im; }
    im = new Image();
    im.onload = () => scheduleRender();
    im.src = "tiles/" + key + ".jpg";
    tiles.set(key, im);
    if (tiles.size > MAX_TILES) tiles.delete(tiles.keys().next().value);
    return im;
  }
  const base = tile(0, 0, 0);  // the whole scene, coarse: drawn under everything
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => { renderQueued = false; render(); });
  }

  // ---------------------------------------------------------------- camera
  function resize() {
    const r = view.getBoundingClientRect(), d = window.devicePixelRatio || 1;
    view.width = Math.max(1, Math.round(r.width * d));
    view.height = Math.max(1, Math.round(r.height * d));
  }
  function fitScene() {
    cam.cx = SCENE.width / 2; cam.cy = SCENE.height / 2;
    cam.s = Math.min(view.width / SCENE.width, view.height / SCENE.height);
  }
  function focusBox(b) {
    const w = b[2] - b[0], h = b[3] - b[1];
    const ctx = Math.max(3 * Math.max(w, h), 96);  // context: three times the box, >= 96 px
    cam.cx = (b[0] + b[2]) / 2; cam.cy = (b[1] + b[3]) / 2;
    cam.s = Math.min(8, Math.min(view.width, view.height) / ctx);
  }
  const toScreen = (x, y) => [(x - cam.cx) * cam.s + view.width / 2, (y - cam.cy) * cam.s + view.height / 2];
  const toScene = (px, py) => [(px - view.width / 2) / cam.s + cam.cx, (py - view.height / 2) / cam.s + cam.cy];

  // ---------------------------------------------------------------- drawing
  function render() {
    const t0 = performance.now();
    const W = view.width, H = view.height;
    vctx.fillStyle = "#000"; vctx.fillRect(0, 0, W, H);
    vctx.imageSmoothingEnabled = cam.s < 1;
    const [x0, y0] = toScene(0, 0), [x1, y1] = toScene(W, H);
    if (base.complete && base.naturalWidth) {
      const [a, b] = toScreen(0, 0), f0 = levelScale(0);
      vctx.drawImage(base, a, b, base.naturalWidth * f0 * cam.s, base.naturalHeight * f0 * cam.s);
    }
    let z = L - 1;
    for (let k = 0; k < L; k++) { if (levelScale(k) <= 1 / cam.s) { z = k; break; } }
    if (z > 0) {
      const span = T * levelScale(z);
      const tx0 = Math.max(0, Math.floor(x0 / span)), ty0 = Math.max(0, Math.floor(y0 / span));
      const tx1 = Math.min(Math.ceil(SCENE.width / span) - 1, Math.floor(x1 / span));
      const ty1 = Math.min(Math.ceil(SCENE.height / span) - 1, Math.floor(y1 / span));
      for (let ty = ty0; ty <= ty1; ty++) for (let tx = tx0; tx <= tx1; tx++) {
        const im = tile(z, ty, tx);
        if (!im.complete || !im.naturalWidth) continue;
        const [a, b] = toScreen(tx * span, ty * span), f = levelScale(z) * cam.s;
        vctx.drawImage(im, a, b, im.naturalWidth * f, im.naturalHeight * f);
      }
    }
    // candidates in view, lowest score first so strong ones are on top
    const lw = Math.max(1.5, (window.devicePixelRatio || 1) * 1.5);
    for (let i = CANDS.length - 1; i >= 0; i--) {
      const c = CANDS[i], b = c.box;
      if (b[2] < x0 || b[0] > x1 || b[3] < y0 || b[1] > y1) continue;
      drawBox(b, decisions.get(c.id), c.class, lw, i === index);
    }
    for (const d of decisions.values()) if (d.review_status === "drawn") drawBox(d.box, d, d.reviewed_class, lw, false);
    if (dragging && dragging.draw && dragging.box) drawBox(dragging.box, {review_status: "drawn"}, drawClass, lw, true);
    stats.lastRenderMs = performance.now() - t0;
    stats.renders++;
    renderOverview();
  }
  function drawBox(b, d, cls, lw, current) {
    const [a, c] = toScreen(b[0], b[1]), [e, f] = toScreen(b[2], b[3]);
    const st = d ? d.review_status : null;
    const shown = d && d.reviewed_class ? d.reviewed_class : cls;
    if (current) { vctx.setLineDash([]); vctx.lineWidth = lw * 3; vctx.strokeStyle = "#fff";
                   vctx.strokeRect(a - 3 * lw, c - 3 * lw, e - a + 6 * lw, f - c + 6 * lw); }
    vctx.lineWidth = current ? lw * 1.6 : lw;
    vctx.setLineDash(st === "rejected" ? [6, 5] : st === "drawn" ? [10, 3] : []);
    vctx.strokeStyle = st === "rejected" ? STATUS_COLOUR.rejected : colour(shown);
    vctx.strokeRect(a, c, e - a, f - c);
    if (st && st !== "rejected") { vctx.fillStyle = STATUS_COLOUR[st]; vctx.fillRect(a, c - 5 * lw, 5 * lw, 5 * lw); }
    vctx.setLineDash([]);
  }
  let ovDirty = true; const ovCache = document.createElement("canvas");
  function renderOverview() {
    const S = Math.min(ov.width / SCENE.width, ov.height / SCENE.height);
    if (ovDirty && base.complete && base.naturalWidth) {
      ovCache.width = ov.width; ovCache.height = ov.height;
      const g = ovCache.getContext("2d");
      g.fillStyle = "#000"; g.fillRect(0, 0, ov.width, ov.height);
      g.drawImage(base, 0, 0, SCENE.width * S, SCENE.height * S);
      for (const c of CANDS) {
        const d = decisions.get(c.id);
        g.fillStyle = d ? (d.review_status === "rejected" ? "#777" : STATUS_COLOUR[d.review_status]) : colour(c.class);
        g.fillRect(c.box[0] * S - 1, c.box[1] * S - 1, Math.max(2, (c.box[2] - c.box[0]) * S), Math.max(2, (c.box[3] - c.box[1]) * S));
      }
      ovDirty = false;
    }
    octx.clearRect(0, 0, ov.width, ov.height);
    octx.drawImage(ovCache, 0, 0);
    const [x0, y0] = toScene(0, 0), [x1, y1] = toScene(view.width, view.height);
    octx.strokeStyle = "#fff"; octx.lineWidth = 1;
    octx.strokeRect(x0 * S, y0 * S, (x1 - x0) * S, (y1 - y0) * S);
  }

  // ---------------------------------------------------------------- panels
  function reviewedCount() { let n = 0; for (const c of CANDS) if (decisions.has(c.id)) n++; return n; }
  function updatePanels() {
    const byClass = {}, secs = [];
    let drawn = 0;
    for (const d of decisions.values()) {
      if (d.reviewed_class) byClass[d.reviewed_class] = (byClass[d.reviewed_class] || 0) + 1;
      if (d.review_status === "drawn") drawn++;
      if (d.seconds) secs.push(d.seconds);
    }
    const mean = secs.length ? secs.reduce((a, b) => a + b, 0) / secs.length : 0;
    const rej = [...decisions.values()].filter((d) => d.review_status === "rejected").length;
    $("progress").textContent = `${reviewedCount()} / ${CANDS.length} reviewed · ` +
      CLASSES.map((c) => `${c} ${byClass[c] || 0}`).join(" · ") + ` · rejected ${rej} · drawn ${drawn}` +
      (secs.length ? ` · ${mean.toFixed(1)} s per decision` : "");
    const c = CANDS[index];
    const cur = $("current");
    cur.textContent = "";
    if (c) {
      const d = decisions.get(c.id);
      const line = (t, cls) => { const e = document.createElement("div"); e.textContent = t; if (cls) e.className = cls; cur.appendChild(e); };
      line(`#${index + 1} of ${CANDS.length}: ${c.class}` + (c.score != null ? `  score ${c.score.toFixed(3)}` : ""));
      line(c.id, "id");
      line(d ? `${d.review_status}${d.reviewed_class && d.reviewed_class !== c.class ? " → " + d.reviewed_class : ""}` : "not reviewed",
           d ? "status-" + d.review_status : "");
      // the note field shows the candidate's saved note when a candidate is first shown; later
      // refreshes (a save answered) leave what the analyst is typing alone
      if (noteFor !== c.id) { $("note").value = d ? d.note || "" : ""; noteFor = c.id; }
    }
    const q = $("queue"); q.textContent = "";
    for (let i = Math.max(0, index - 3); i < Math.min(CANDS.length, index + 9); i++) {
      const e = document.createElement("div"), d = decisions.get(CANDS[i].id);
      e.textContent = `${String(i + 1).padStart(5)} ${(CANDS[i].score != null ? CANDS[i].score.toFixed(2) : "  - ")} ${CANDS[i].class.padEnd(10)} ${d ? d.review_status : ""}`;
      if (i === index) e.className = "cur";
      q.appendChild(e);
    }
    const cl = $("classes"); cl.textContent = "";
    CLASSES.forEach((name, i) => { const s = document.createElement("span"); s.textContent = `${i + 1} ${name}`;
      s.style.background = colour(name); if (drawMode && name === drawClass) s.style.outline = "2px solid #fff"; cl.appendChild(s); });
    $("mode").className = drawMode ? "on" : "";
    $("mode").textContent = drawMode ? `draw a ${drawClass} box: drag (1-${CLASSES.length} change class, b or Esc cancels)` : "";
    view.className = drawMode ? "draw" : "";
    const ss = $("save-state");
    ss.className = saveError ? "error" : "";
    ss.textContent = saveError ? "NOT SAVED: " + saveError : served ? (pendingSaves ? "saving…" : "saved to disk") : "saved in this browser (Export to keep)";
  }

  // ---------------------------------------------------------------- decisions
  function persistLocal() {
    try { localStorage.setItem(STORE_KEY, JSON.stringify([...decisions.values()])); }
    catch (e) { saveError = "browser storage: " + e.message; }
  }
  function post(body) {
    pendingSaves++;
    chain = chain.then(() => fetch("api/decision", {method: "POST", headers: {"Content-Type": "application/json"},
                                                   body: JSON.stringify(body)}))
      .then((r) => { if (!r.ok) return r.json().then((j) => { throw new Error(j.error || r.status); }); saveError = null; })
      .catch((e) => { saveError = String(e.message || e); })
      .finally(() => { pendingSaves--; updatePanels(); });
    return chain;
  }
  function put(d) {           // record (or, d = {id, undo}, remove) and save
    if (d.undo) decisions.delete(d.id); else { decisions.delete(d.id); decisions.set(d.id, d); }
    ovDirty = true;
    if (served) post(d); else persistLocal();
  }
  function decide(status, cls) {
    const c = CANDS[index];
    if (!c) return;
    const prev = decisions.get(c.id) || null;
    const note = $("note").value;
    if (status === "relabelled" && cls === c.class) status = "accepted";
    const d = {id: c.id, review_status: status, class: c.class,
               reviewed_class: status === "rejected" ? null : (cls || c.class), note: note,
               reviewed_at: new Date().toISOString(), score: c.score, box: c.box,
               seconds: Math.round((performance.now() - shownAt) / 100) / 10};
    undoStack.push({id: c.id, prev: prev, index: index});
    put(d);
    go(index + 1);
  }
  function saveNote() {
    const c = CANDS[index], d = c && decisions.get(c.id);
    if (!d) return;            // a note goes with the decision: typed first, saved when decided
    undoStack.push({id: d.id, prev: d, index: index});
    put(Object.assign({}, d, {note: $("note").value, reviewed_at: new Date().toISOString()}));
  }
  function addDrawn(box) {
    const id = "drawn-" + Date.now().toString(36) + "-" + Math.floor(Math.random() * 1e6).toString(36);
    const d = {id: id, review_status: "drawn", class: null, reviewed_class: drawClass, note: $("note").value,
               reviewed_at: new Date().toISOString(), score: null, box: box.map((v) => Math.round(v * 10) / 10),
               seconds: null};
    undoStack.push({id: id, prev: null, index: index});
    put(d);
  }
  function undo() {
    const u = undoStack.pop();
    if (!u) return;
    put(u.prev ? u.prev : {id: u.id, undo: true});
    noteFor = null;
    go(u.index);
  }

  // ---------------------------------------------------------------- navigation
  function go(i) {
    index = Math.max(0, Math.min(CANDS.length - 1, i));
    shownAt = performance.now();
    if (zoomed && CANDS[index]) focusBox(CANDS[index].box);
    updatePanels();
    render();
  }
  function toggleZoom() {
    zoomed = !zoomed;
    if (zoomed && CANDS[index]) focusBox(CANDS[index].box); else fitScene();
    render();
  }

  // ---------------------------------------------------------------- input
  document.addEventListener("keydown", (ev) => {
    const t0 = performance.now();
    if (ev.target === $("note")) {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); saveNote(); $("note").blur(); }
      else if (ev.key === "Escape") $("note").blur();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key;
    const digit = /^[1-9]$/.test(k) ? parseInt(k, 10) - 1 : -1;
    if (drawMode) {
      if (digit >= 0 && digit < CLASSES.length) drawClass = CLASSES[digit];
      else if (k === "b" || k === "Escape") drawMode = false;
      else if (k === "u") undo();
      else return;
    } else if (k === "a") decide("accepted");
    else if (k === "r") decide("rejected");
    else if (digit >= 0 && digit < CLASSES.length) decide("relabelled", CLASSES[digit]);
    else if (k === "n" || k === "ArrowRight" || k === "j") go(index + 1);
    else if (k === "p" || k === "ArrowLeft" || k === "k") go(index - 1);
    else if (k === "u") undo();
    else if (k === "b") { drawMode = true; drawClass = CANDS[index] ? CANDS[index].class : CLASSES[0]; }
    else if (k === "z") toggleZoom();
    else if (k === "t") { ev.preventDefault(); $("note").focus(); }
    else return;
    ev.preventDefault();
    updatePanels();
    render();
    stats.lastKeyMs = performance.now() - t0;
  });
  const canvasXY = (ev) => { const r = view.getBoundingClientRect(), d = view.width / r.width;
                             return [(ev.clientX - r.left) * d, (ev.clientY - r.top) * d]; };
  view.addEventListener("mousedown", (ev) => {
    const [px, py] = canvasXY(ev);
    dragging = {draw: drawMode, px: px, py: py, start: toScene(px, py), cx: cam.cx, cy: cam.cy, box: null};
  });
  window.addEventListener("mousemove", (ev) => {
    if (!dragging) return;
    const [px, py] = canvasXY(ev);
    if (dragging.draw) {
      const [x, y] = toScene(px, py), [sx, sy] = dragging.start;
      const cl = (v, m) => Math.max(0, Math.min(m, v));
      dragging.box = [cl(Math.min(sx, x), SCENE.width), cl(Math.min(sy, y), SCENE.height),
                      cl(Math.max(sx, x), SCENE.width), cl(Math.max(sy, y), SCENE.height)];
    } else {
      cam.cx = dragging.cx - (px - dragging.px) / cam.s; cam.cy = dragging.cy - (py - dragging.py) / cam.s;
    }
    scheduleRender();
  });
  window.addEventListener("mouseup", () => {
    const dr = dragging; dragging = null;
    if (dr && dr.draw && dr.box && dr.box[2] - dr.box[0] >= 2 && dr.box[3] - dr.box[1] >= 2) {
      addDrawn(dr.box); drawMode = false; updatePanels();
    }
    scheduleRender();
  });
  view.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const [px, py] = canvasXY(ev), [x, y] = toScene(px, py);
    cam.s = Math.max(1e-4, Math.min(16, cam.s * Math.pow(1.0015, -ev.deltaY)));
    cam.cx = x - (px - view.width / 2) / cam.s; cam.cy = y - (py - view.height / 2) / cam.s;
    scheduleRender();
  }, {passive: false});
  ov.addEventListener("click", (ev) => {
    const r = ov.getBoundingClientRect(), S = Math.min(ov.width / SCENE.width, ov.height / SCENE.height);
    cam.cx = (ev.clientX - r.left) * (ov.width / r.width) / S; cam.cy = (ev.clientY - r.top) * (ov.height / r.height) / S;
    render();
  });
  $("export").addEventListener("click", () => {
    const doc = {review: {scene: SCENE.name, model: DATA.model, classes: CLASSES, exported: new Date().toISOString()},
                 decisions: [...decisions.values()]};
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([JSON.stringify(doc)], {type: "application/json"}));
    a.download = "decisions.json";
    document.body.appendChild(a); a.click(); a.remove();
  });
  window.addEventListener("resize", () => { resize(); if (zoomed && CANDS[index]) focusBox(CANDS[index].box); render(); });

  // ---------------------------------------------------------------- start
  function start(list) {
    for (const d of list) decisions.set(d.id, d);
    ovDirty = true;
    let i = CANDS.findIndex((c) => !decisions.has(c.id));
    go(i < 0 ? CANDS.length - 1 : i);
    window.revet.ready = true;
  }
  window.revet = {
    ready: false, stats: stats,
    state: () => ({index: index, served: served, drawMode: drawMode, saveError: saveError,
                   decisions: [...decisions.values()], reviewed: reviewedCount(), total: CANDS.length}),
    flush: () => chain,
    sceneToClient: (x, y) => { const [a, b] = toScreen(x, y), r = view.getBoundingClientRect(), d = view.width / r.width;
                               return [r.left + a / d, r.top + b / d]; },
  };
  resize();
  fitScene();
  const local = () => { let list = []; try { list = JSON.parse(localStorage.getItem(STORE_KEY) || "[]"); } catch (e) { list = []; }
                        start(list); };
  if (location.protocol === "http:" || location.protocol === "https:") {
    fetch("api/decisions", {cache: "no-store"})
      .then((r) => { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then((j) => { served = true; start(j.decisions); })
      .catch(() => local());
  } else local();
})();
