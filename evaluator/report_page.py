"""The report's page: its HTML skeleton and its inline stylesheet (no external resources)."""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header><h1>{title}</h1><p class="subtitle">{subtitle}</p><nav>{nav}</nav></header>
<main>{sections}</main>
</body>
</html>
"""

CSS = """
:root { --fg:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f3f4f6; --card:#fff;
  --accent:#2563eb; --good:#15803d; --bad:#b91c1c; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); line-height:1.45;
  font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
header { background:#111827; color:#f9fafb; padding:24px 32px 12px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:600; overflow-wrap:anywhere; }
.subtitle { margin:0 0 12px; color:#d1d5db; }
nav a { color:#93c5fd; text-decoration:none; margin-right:16px; font-size:14px; }
main { max-width:1240px; margin:0 auto; padding:24px; display:grid; gap:20px;
  grid-template-columns:repeat(2,minmax(0,1fr)); }
.card { background:var(--card); border-radius:10px; padding:18px 22px;
  box-shadow:0 1px 3px rgba(0,0,0,.08); min-width:0; overflow-x:auto; }
.card:not(#config):not(#environment) { grid-column:1/-1; }
h2 { margin:0 0 14px; font-size:18px; }
h3 { margin:18px 0 8px; font-size:15px; }
.tiles { display:grid; gap:12px; grid-template-columns:repeat(auto-fit,minmax(150px,1fr));
  margin-bottom:16px; }
.tile { border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.tile .value { font-size:26px; font-weight:600; color:var(--accent);
  font-variant-numeric:tabular-nums; }
.tile .label { color:var(--muted); font-size:13px; }
.verdict { font-size:20px; font-weight:600; padding:10px 14px; border-radius:8px;
  margin-bottom:12px; }
.verdict.pass { background:#dcfce7; color:var(--good); }
.verdict.fail { background:#fee2e2; color:var(--bad); }
.verdict .why { margin:4px 0 0; font-size:14px; font-weight:400; color:var(--fg); }
.warning { background:#fef3c7; border-left:4px solid #d97706; color:#78350f; padding:10px 14px;
  border-radius:8px; margin-bottom:12px; }
.warning ul { margin:6px 0 0; padding-left:20px; }
span.pass { color:var(--good); font-weight:600; } span.fail { color:var(--bad); font-weight:600; }
table { border-collapse:collapse; width:100%; font-size:14px; margin:4px 0 12px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line);
  overflow-wrap:anywhere; }
th { background:#f9fafb; font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
tbody tr:nth-child(even) { background:#f9fafb; }
tr.worst, tbody tr.worst:nth-child(even) { background:#fef2f2; }
tr.worst td:first-child { border-left:3px solid var(--bad); font-weight:600; }
.bar { display:inline-block; min-width:64px; padding:0 4px; border-radius:3px;
  background:linear-gradient(90deg,#bfdbfe calc(var(--v,0)*100%),transparent 0); }
.split { display:grid; gap:20px; grid-template-columns:repeat(auto-fit,minmax(420px,1fr));
  align-items:start; }
.figures { display:grid; gap:16px; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); }
figure { margin:0; text-align:center; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
pre { background:#f9fafb; border:1px solid var(--line); border-radius:6px; padding:12px;
  font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; overflow-x:auto;
  max-height:520px; }
.muted { color:var(--muted); font-size:13px; }
@media (max-width:640px) { main { grid-template-columns:1fr; padding:12px; } }
"""
