"""The combined HTML report is self-contained: every figure is embedded and decodes as an image."""

import base64
import io
import os
import re
import shutil
import subprocess

import matplotlib.image as mpimg
import pytest

from nnbasics.runs import claims
from nnbasics.runs.plotting import subplots
from nnbasics.runs.report import combined_html
from nnbasics.runs.workdir import Workdir


def _report(tmp_path):
    results, dirs = [], []
    for name, topic in (("alpha", "basics"), ("beta", "convolution")):
        wd = Workdir(tmp_path / f"{name}-quick")
        for i in range(2):
            fig, (ax,) = subplots(1, 1)
            ax.plot([0, 1], [i, 1 - i])
            wd.save_figure(fig, f"fig{i}")
        results.append({"experiment": name, "topic": topic, "seconds": 1.0, "figures": list(wd.list_figures()),
                        "claims": [claims.claim("c", "a claim", "src", "x >= 1", {"x": 0.5}, claims.at_least(0.5, 1))]})
        dirs.append(f"{name}-quick")
    return combined_html(results, dirs, str(tmp_path)), results


def test_every_figure_is_embedded_and_decodes(tmp_path):
    html, results = _report(tmp_path)
    srcs = re.findall(r"<img [^>]*src='data:image/png;base64,([^']+)'", html)
    assert len(srcs) == sum(len(r["figures"]) for r in results) == 4
    for src, (r, f) in zip(srcs, [(r, f) for r in results for f in r["figures"]]):
        raw = base64.b64decode(src)
        assert raw == (tmp_path / f"{r['experiment']}-quick" / f).read_bytes()
        assert mpimg.imread(io.BytesIO(raw), format="png").shape[0] > 10
    assert "src='figures/" not in html and "file://" not in html  # nothing outside the file
    assert "alpha/c" in html and "expected x &gt;= 1" in html  # the failed claim is listed with its numbers
    assert html.index("did not pass") < html.index("<h2") and "<table" not in html[:html.index("<h2")]


# CI (.ci/run installs Chromium when missing) must run it; elsewhere it skips without a browser
@pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("CI"), reason="no chromium on this machine")
def test_report_opens_in_a_browser_with_every_image_decoded(tmp_path):
    html, _ = _report(tmp_path)
    probe = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
             "document.body.setAttribute('data-check',i.length+'/'+i.filter(x=>x.complete&&x.naturalWidth>0).length)"
             "});</script>")
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", probe + "</body>"))
    out = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-check="4/4"' in out.stdout, out.stderr[-1000:]
