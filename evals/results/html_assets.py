"""The HTML report's stylesheet and script, inlined into every page (no external asset, no CDN).

The script only enhances: it fills the example explorer from the JSON block and switches
the confusion matrix shown. It builds rows with ``textContent`` (never ``innerHTML``), so
a patient text cannot inject markup. When it has run it sets ``data-js="ready"`` on
``<body>`` and writes the explorer's count into ``#explorer-count``: the browser test
looks for both.
"""

from __future__ import annotations

PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#8c564b", "#444444")
"""Line colours of the trend chart (Okabe-Ito, colour-blind safe), reused in order."""

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d1d1f;
margin:0;background:#f6f7f9}
main{max-width:1240px;margin:0 auto;padding:1rem 1.2rem 3rem}
header{background:#1f2937;color:#fff;padding:.7rem 1.2rem}
header h1{margin:0;font-size:18px;font-weight:600}
nav{max-width:1240px;margin:0 auto;font-size:13px}
nav a{color:#cbd5e1;margin-right:1rem;text-decoration:none}nav a:hover{color:#fff}
section{overflow-x:auto;background:#fff;border:1px solid #e3e5e8;border-radius:6px;padding:.6rem 1.1rem 1rem;
margin:1rem 0}
h2{font-size:17px;margin:.4rem 0 .6rem}h3{font-size:14px;margin:1rem 0 .4rem}
p.note{color:#555;font-size:13px;margin:.3rem 0 .6rem}
table{border-collapse:collapse;font-size:13px;margin:.3rem 0}
th{background:#f3f4f6;font-weight:600}
th,td{border:1px solid #e1e3e6;padding:.25rem .5rem;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.bad td{background:#fff1f1}
.badge{display:inline-block;min-width:3.6em;text-align:center;padding:0 .45em;border-radius:3px;
font-size:11px;font-weight:700;letter-spacing:.04em;color:#fff}
.badge.pass{background:#1a7f37}.badge.fail{background:#c62828}.badge.warn{background:#b7791f}
.badge.none{background:#6b7280}
.pos{color:#1a7f37}.neg{color:#c62828}
#verdict.pass{border-left:8px solid #1a7f37}#verdict.fail{border-left:8px solid #c62828}
.big{font-size:26px;font-weight:800;letter-spacing:.05em;margin-right:.6rem}
#verdict.pass .big{color:#1a7f37}#verdict.fail .big{color:#c62828}
ul.errors li{color:#a40000;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
ul.warnings li{color:#7a5a00;font-size:13px}
.facts{color:#444}
.bar{display:inline-block;width:90px;height:9px;background:#e9ecef;border-radius:2px;vertical-align:middle;
margin-right:.4rem;overflow:hidden}.bar i{display:block;height:100%;background:#3b82f6}
.bar.bad i{background:#c62828}.bar.empty{background:repeating-linear-gradient(45deg,#eee,#eee 3px,#fff 3px,#fff 6px)}
td.rc{white-space:nowrap;font-variant-numeric:tabular-nums}td.rc small{color:#777}
table.cm td{width:24px;height:22px;padding:0;text-align:center;font-size:11px;border:1px solid #f0f0f0}
table.cm th.rot{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;font-size:11px;
padding:.3rem 0;white-space:nowrap;height:auto}
table.cm th.row{font-weight:normal;white-space:nowrap;font-size:12px}
table.cm td.diag{outline:1px solid #1a7f37}
details>summary{cursor:pointer;color:#1f4e9b;margin:.3rem 0}
.controls{display:flex;flex-wrap:wrap;gap:.6rem;align-items:center;margin:.3rem 0 .6rem}
.controls label{font-size:13px;color:#333}
.controls input[type=search]{width:18rem;padding:.2rem .4rem}
#explorer-table{width:100%}#explorer-table td.sym{width:50%}#explorer-table td.id{white-space:nowrap}
.scroll{max-height:680px;overflow:auto;border:1px solid #e3e5e8}
#explorer-table thead th{position:sticky;top:0}
#explorer-table tr.wrong td.pred{color:#c62828;font-weight:600}
#explorer-table tr.right td.pred{color:#1a7f37}
svg text{font:11px system-ui,"DejaVu Sans",sans-serif;fill:#444}
.legend span{display:inline-block;margin-right:1rem;font-size:12px}
.legend i{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:.3rem}
"""

JS = """
(function () {
  "use strict";
  function byId(id) { return document.getElementById(id); }
  function option(select, value, text) {
    var o = document.createElement("option"); o.value = value; o.textContent = text; select.appendChild(o);
  }
  var cm = byId("cm-program");
  if (cm) {
    var show = function () {
      var boxes = document.querySelectorAll(".cm-box");
      for (var i = 0; i < boxes.length; i++) { boxes[i].hidden = boxes[i].getAttribute("data-program") !== cm.value; }
    };
    cm.addEventListener("change", show); show();
  }
  var source = byId("examples-data");
  var data = source ? JSON.parse(source.textContent) : {columns: [], rows: []};
  var col = {}; data.columns.forEach(function (name, i) { col[name] = i; });
  var rows = data.rows, limit = 500;
  var fProgram = byId("f-program"), fGold = byId("f-gold"), fOutcome = byId("f-outcome"), fText = byId("f-text");
  var body = byId("explorer-body"), count = byId("explorer-count");
  if (fProgram && fGold) {
    var programs = [], golds = [];
    rows.forEach(function (r) {
      if (programs.indexOf(r[col.program]) < 0) programs.push(r[col.program]);
      if (golds.indexOf(r[col.gold]) < 0) golds.push(r[col.gold]);
    });
    golds.sort();
    programs.forEach(function (p) { option(fProgram, p, p); });
    golds.forEach(function (g) { option(fGold, g, g); });
  }
  function cell(tr, text, cls) {
    var td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td);
  }
  function render() {
    if (!body) return;
    var p = fProgram.value, g = fGold.value, o = fOutcome.value, q = fText.value.trim().toLowerCase();
    var shown = 0, matched = 0, frag = document.createDocumentFragment();
    rows.forEach(function (r) {
      if (p && r[col.program] !== p) return;
      if (g && r[col.gold] !== g) return;
      if (o === "right" && !r[col.correct]) return;
      if (o === "wrong" && r[col.correct]) return;
      if (o === "invalid" && !r[col.invalid]) return;
      if (q) {
        var hay = (r[col.symptoms] + " " + r[col.id] + " " + r[col.predicted] + " " + r[col.error]).toLowerCase();
        if (hay.indexOf(q) < 0) return;
      }
      matched++;
      if (shown >= limit) return;
      shown++;
      var tr = document.createElement("tr"); tr.className = r[col.correct] ? "right" : "wrong";
      cell(tr, r[col.program]); cell(tr, r[col.id], "id"); cell(tr, r[col.symptoms], "sym"); cell(tr, r[col.gold]);
      cell(tr, r[col.predicted], "pred"); cell(tr, r[col.error]);
      cell(tr, Math.round(r[col.latency_ms]).toLocaleString("en-US"), "num");
      frag.appendChild(tr);
    });
    body.textContent = ""; body.appendChild(frag);
    count.textContent = "Showing " + shown + " of " + matched + " matching (" + rows.length + " examples in all)";
  }
  [fProgram, fGold, fOutcome].forEach(function (el) { if (el) el.addEventListener("change", render); });
  if (fText) fText.addEventListener("input", render);
  render();
  document.body.setAttribute("data-js", "ready");
})();
"""
