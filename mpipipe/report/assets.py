"""The report's inline SVG patterns, CSS and JavaScript."""

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#a0cbe8",
           "#8cd17d", "#ffbe7d", "#bab0ac", "#d4a6c8")

SVG_DEFS = ("<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" "
            "patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#fbd5d5\"/>"
            "<line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#d62728\" stroke-width=\"3\"/></pattern>"
            "<pattern id=\"gaphatch\" width=\"8\" height=\"8\" patternUnits=\"userSpaceOnUse\" "
            "patternTransform=\"rotate(45)\"><rect width=\"8\" height=\"8\" fill=\"#ffffff\"/><line x1=\"0\" y1=\"0\" "
            "x2=\"0\" y2=\"8\" stroke=\"#9aa2b1\" stroke-width=\"2\"/></pattern></defs>")

CSS = """
:root{--fg:#1f2430;--dim:#6b7385;--line:#e3e6ec;--bg:#f6f7f9;--ok:#2f8f46;--bad:#d62728;--warn:#c98a00;--run:#2c6fbb}
*{box-sizing:border-box}
body{margin:0;padding:18px 26px 30px;font:13px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",
 "Helvetica Neue",Arial,sans-serif;color:var(--fg);background:#fff;max-width:1260px}
h1{font-size:21px;margin:0 0 4px;display:flex;align-items:center;gap:12px;flex-wrap:wrap}
h2{font-size:15px;margin:22px 0 8px;padding-bottom:4px;border-bottom:1px solid var(--line)}
.mono,pre,code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12px}
.dim{color:var(--dim)}.note{color:var(--dim);margin:6px 0 0;font-size:12px}
.meta{margin:2px 0;color:#3b4252}.cmd{margin:2px 0 10px;color:var(--dim);word-break:break-all}
.pill{font-size:12px;font-weight:600;padding:2px 10px;border-radius:10px;color:#fff;background:#8a94a6}
.pill.ok{background:var(--ok)}.pill.bad{background:var(--bad)}.pill.warn{background:var(--warn)}
.pill.run{background:var(--run)}
.tiles{display:grid;grid-template-columns:repeat(7,minmax(0,1fr));gap:8px}
.tile{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:6px 10px;min-width:0}
.tile.bad{background:#fdecec;border-color:#f3b4b4}.tile.bad .tl-value{color:var(--bad)}
.tl-label{font-size:11px;color:var(--dim);text-transform:uppercase;letter-spacing:.03em;white-space:nowrap}
.tl-value{font-size:17px;font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tl-sub{font-size:11px;color:var(--dim);white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:6px;background:#fff}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
svg.plan{display:block;margin:0 auto;max-width:100%;height:auto}
.plan .box{fill:#fff;stroke:#c3c9d4;stroke-width:1.2}.plan .edge{fill:none;stroke:#8a94a6;stroke-width:1.4}
.pnode.ok .box{stroke:var(--ok)}.pnode.bad .box{stroke:var(--bad);stroke-width:2}.pnode.part .box{stroke:var(--warn)}
.pname{font-size:13px;font-weight:600;fill:var(--fg)}.pkind{font-size:11px;fill:var(--dim)}.pkind.end{text-anchor:end}
.pcount{font-size:11px;fill:#3b4252}.pcount.bad{fill:var(--bad);font-weight:600}.pcount.ok{fill:var(--ok)}
.pbar{fill:#e8ebf0}.pbar-done{fill:var(--ok)}.pbar-done.bad,.pbar-done.part{fill:var(--warn)}
.pnode{cursor:default}.pnode:hover .box{fill:#f3f6fb}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:0 0 8px}
.key{display:inline-flex;align-items:center;gap:5px;cursor:default;padding:1px 4px;border-radius:4px}
.key:hover{background:var(--bg)}
.key i,.card-title i,.sw{display:inline-block;width:12px;height:12px;border-radius:2px}
.sw{margin-right:6px;vertical-align:-1px}
.hatch{background:repeating-linear-gradient(45deg,#d62728 0 2px,#fbd5d5 2px 5px);outline:1px solid #a01010}
.tl .rowbg{fill:#fafbfc}.tl .rowbg.odd{fill:#f1f3f6}
.tl .rl{font-size:11px;fill:#3b4252;text-anchor:end}
.tl .grid{stroke:#dde1e7;stroke-width:1}.tl .tick{font-size:11px;fill:var(--dim);text-anchor:middle}
.tl .axis-title{font-size:11px;fill:var(--dim);text-anchor:end}
.tl .runbar{fill:#9aa2b1}.tl .runbar:hover{fill:#5a6272}
.tl .bar{stroke:rgba(0,0,0,.25);stroke-width:.5}.tl .bar.agg{stroke:none}
.tl .bar.fail.agg{fill:#d62728;stroke:none}
.tl .bar.fail{fill:url(#hatch);stroke:#b00000;stroke-width:1.5}
.tl .gap rect{fill:url(#gaphatch);stroke:#8a94a6;stroke-dasharray:2 2}
.tl .gapl{font-size:10px;fill:#3b4252;font-weight:600}
.tl .runline{stroke:#5a6272;stroke-dasharray:3 3}.tl .runl{font-size:10px;fill:#5a6272}
.tl.hl .bar{opacity:.12}.tl.hl .bar.on{opacity:1}
""" + "".join(f".c{k}{{fill:{c}}}" for k, c in enumerate(PALETTE)) + """
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(276px,1fr));gap:10px}
.card{border:1px solid var(--line);border-radius:6px;padding:6px 8px 2px}
.card-title{font-weight:600;display:flex;align-items:center;gap:6px;overflow:hidden;white-space:nowrap}
.card-stats{font-size:11px;color:var(--dim)}
.card .med{stroke:#1f2430;stroke-width:1.5}.card .p95{stroke:#1f2430;stroke-width:1;stroke-dasharray:3 2}
.card .hbase{stroke:#9aa2b1}.card .hl{font-size:10px;fill:var(--dim)}.card .hl.end{text-anchor:end}
.card .hl.mid{text-anchor:middle}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:11px;color:var(--dim);font-weight:600;text-transform:uppercase;letter-spacing:.03em;background:var(--bg)}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.bad td:first-child{border-left:3px solid var(--bad)}
pre.err{margin:0;white-space:pre-wrap;word-break:break-word;color:#8b1a1a;max-height:12em;overflow:auto}
summary.err{cursor:pointer;color:#8b1a1a}
.badtext{color:var(--bad);font-weight:600}.oktext{color:var(--ok)}.okmsg{color:var(--ok)}
details.runs{margin-top:10px}details.runs summary{cursor:pointer;color:#3b4252}
details.runs table{margin-top:6px}
a{color:#2c6fbb;text-decoration:none}a:hover{text-decoration:underline}
footer{margin-top:26px;color:var(--dim);font-size:11px}
#tip{position:fixed;pointer-events:none;display:none;max-width:460px;background:#1f2430;color:#fff;
 padding:6px 9px;border-radius:5px;font-size:12px;line-height:1.4;box-shadow:0 2px 8px rgba(0,0,0,.25);z-index:9;
 white-space:pre-wrap;word-break:break-word}
#tip b{color:#ffd479}
@media (max-width:1100px){.tiles{grid-template-columns:repeat(4,minmax(0,1fr))}}
"""

JS = r"""
(function(){
var D=JSON.parse(document.getElementById('report-data').textContent);
var tip=document.getElementById('tip');
function dur(s){if(s<1e-3)return Math.round(s*1e6)+'\u00b5s';if(s<0.01)return (s*1e3).toFixed(1)+'ms';
 if(s<1)return Math.round(s*1e3)+'ms';if(s<60)return s.toFixed(s<10?2:1)+'s';
 if(s<3600)return Math.floor(s/60)+'m '+String(Math.round(s%60)).padStart(2,'0')+'s';
 return Math.floor(s/3600)+'h '+String(Math.floor(s%3600/60)).padStart(2,'0')+'m';}
function text(el,parts){el.textContent='';parts.forEach(function(p){var n;if(p[1]){n=document.createElement('b');
 n.textContent=p[0];}else{n=document.createTextNode(p[0]);}el.appendChild(n);});}
function describe(el){
 if(el.hasAttribute('data-i')){var b=D.bars[+el.getAttribute('data-i')];if(!b)return null;
  var p=[[D.nodes[b[0]]+'['+b[1]+']',1],[' attempt '+b[2]+(b[6]>=0?' \u2014 FAILED':'')+'\n'],
   ['rank '+b[3]+' \u00b7 '+dur(b[5])+' \u00b7 started at +'+dur(b[4])]];
  if(b[6]>=0)p.push(['\n'+D.errors[b[6]]]);return p;}
 if(el.hasAttribute('data-a')){var a=D.agg[+el.getAttribute('data-a')];if(!a)return null;
  return [['rank '+a[0],1],[' near +'+dur(a[1])+'\n'+a[2]+' attempt(s) started in this slice\nbusiest node: '+
   D.nodes[a[4]]+'\nbusy: '+Math.round(a[3]*100)+'%']];}
 if(el.hasAttribute('data-r')){var r=(D.runs||[])[+el.getAttribute('data-r')];if(!r)return null;
  return [['run '+r[0],1],[' \u2014 '+r[3]+'\nstarted at +'+dur(r[1])+' \u00b7 '+dur(r[2])+'\n'+r[4]+
   ' task attempt(s) ran, '+r[5]+' failed']];}
 if(el.hasAttribute('data-f')){var f=D.aggf[+el.getAttribute('data-f')];if(!f)return null;
  return [['rank '+f[0]+': '+f[1]+' failed attempt(s)',1],['\nfirst: '+D.nodes[f[2]]+'['+f[3]+'] attempt '+f[4]+
   '\n'+D.errors[f[5]]]];}
 return null;}
var svg=document.getElementById('timeline-svg');
if(svg){
 Array.prototype.forEach.call(svg.querySelectorAll('rect.bar > title'),function(t){t.parentNode.removeChild(t);});
 svg.addEventListener('mousemove',function(ev){var t=ev.target;
  var p=t&&t.classList&&(t.classList.contains('bar')||t.classList.contains('runbar'))?
  describe(t):null;if(!p){tip.style.display='none';return;}text(tip,p);tip.style.display='block';
  var x=ev.clientX+14,y=ev.clientY+14,w=tip.offsetWidth,h=tip.offsetHeight;
  if(x+w>window.innerWidth-4)x=ev.clientX-w-14;if(y+h>window.innerHeight-4)y=ev.clientY-h-14;
  tip.style.left=Math.max(4,x)+'px';tip.style.top=Math.max(4,y)+'px';});
 svg.addEventListener('mouseleave',function(){tip.style.display='none';});
 function highlight(n){svg.classList.toggle('hl',n!==null);Array.prototype.forEach.call(svg.querySelectorAll('.bar'),
  function(r){r.classList.toggle('on',n!==null&&r.getAttribute('data-n')===n);});}
 Array.prototype.forEach.call(document.querySelectorAll('.key[data-n],.pnode[data-node],.card[data-n]'),function(k){
  var n=k.getAttribute('data-n')||k.getAttribute('data-node');
  k.addEventListener('mouseenter',function(){highlight(n);});
  k.addEventListener('mouseleave',function(){highlight(null);});});
}
document.documentElement.setAttribute('data-ready','1');
})();
"""


def node_color(ni: int) -> str:
    """The colour of node number `ni` everywhere in the report."""
    return PALETTE[ni % len(PALETTE)]
